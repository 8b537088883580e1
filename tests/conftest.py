from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skiff.data.dataset import write_csv
from skiff.data.synthetic import generate
from skiff.model.hyperparameters import Hyperparameters
from tests.aws_fixtures import aws, aws_server, subscriber  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
SMS_SPAM = ROOT.parent / "shared" / "data" / "sms-spam"
EVENTS = ROOT.parent / "shared" / "events"

# Small enough to train in a couple of seconds, large enough to learn the demo topics.
SMALL_HYPERPARAMETERS = Hyperparameters(epochs=3, buckets=1 << 12, embedding_dim=16, char_ngrams="none")


@pytest.fixture(scope="session")
def sms_spam() -> Path:
    if not (SMS_SPAM / "train.csv").is_file():
        pytest.fail(
            f"expected the shared dev set at {SMS_SPAM} (got: missing); the tests need ../shared beside the checkout"
        )
    return SMS_SPAM


@pytest.fixture(scope="session")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.csv"
    write_csv(path, generate(600, seed=3))
    return path


@pytest.fixture(scope="session")
def sms_artifact(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> Path:
    """The default model trained on sms-spam (test.csv as the test channel), run exactly as SageMaker would."""
    from skiff.local.container import run_training_container

    root = tmp_path_factory.mktemp("sms-job")
    run = run_training_container(
        root, {"train": sms_spam / "train.csv", "test": sms_spam / "test.csv"}, Hyperparameters()
    )
    assert run.succeeded, run.failure_reason
    return run.model_dir


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory, demo_csv: Path) -> Path:
    """A small model trained in-process on the demo data; copy it before altering it."""
    from skiff.data.dataset import read_csv, split_dataset
    from training.pipeline import TrainingData, build_artifact

    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    model_dir = tmp_path_factory.mktemp("small") / "model"
    build_artifact(TrainingData(train, evaluation, "hashed-split"), SMALL_HYPERPARAMETERS, model_dir)
    return model_dir


def predict_in_a_fresh_process(model_dir: Path, text: str) -> list[dict[str, Any]]:
    """``skiff predict --json --model`` in a new interpreter; fails if torch or transformers was imported."""
    code = (
        "import sys; from skiff.cli.main import main;"
        f"rc = main(['predict', '--json', '--model', {str(model_dir)!r}, {text!r}]);"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')];"
        "assert not heavy, f'imported {heavy[:3]}'; sys.exit(rc)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


@pytest.fixture(scope="session")
def pytorch_image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A stand-in for the PyTorch DLC (Python, torch, numpy, SageMaker's training toolkit) in a
    virtualenv, built once: the training and endpoint toolkit tests add their containers on top."""
    from tests.training.toolkit import Image

    return Image.build(tmp_path_factory.mktemp("pytorch-image") / "venv")
