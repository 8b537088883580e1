"""Fixtures shared by the training tests: a tiny encoder and a small slice of sms-spam."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skiff.data.dataset import read_csv, write_csv
from tests.conftest import ROOT
from tests.tiny_encoder import build_tiny_encoder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> Path:
    """A WordPiece tokenizer trained on sms-spam and a 2-layer, 32-wide BERT, saved in HF format."""
    return build_tiny_encoder(read_csv(sms_spam / "train.csv").texts, tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def small_sms(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("small-sms")
    write_csv(directory / "train.csv", read_csv(sms_spam / "train.csv").examples[:640])
    write_csv(directory / "test.csv", read_csv(sms_spam / "test.csv").examples[:200])
    return directory / "train.csv", directory / "test.csv"


def run_job(tmp: Path, train_csv: Path, test_csv: Path, hyperparameters: dict[str, str], *, ranks: int = 1) -> Path:
    """training/train.py as a process (under torchrun with ``ranks`` > 1); returns its model directory.

    Checkpoints go to ``tmp/ckpt-<ranks>``.
    """
    model_dir = tmp / f"model-{ranks}"
    args = ["--train", str(train_csv), "--test", str(test_csv), "--model-dir", str(model_dir)]
    args += ["--checkpoint-dir", str(tmp / f"ckpt-{ranks}")]
    for name, value in hyperparameters.items():
        args += [f"--{name}", value]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [*(launcher if ranks > 1 else [sys.executable]), str(ROOT / "training" / "train.py"), *args]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return model_dir
