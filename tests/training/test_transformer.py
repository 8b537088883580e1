"""The transformer family with a tiny, randomly initialized encoder (seconds, not minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skiff.artifact import load_artifact
from skiff.data import read_csv, write_csv
from skiff.features import TokenizerFeaturizer, TokenizerSpec
from skiff.hyperparameters import Hyperparameters
from tests.conftest import ROOT

TINY = {
    "model_family": "transformer",
    "epochs": "2",
    "batch_size": "16",
    "learning_rate": "0.001",
    "max_length": "32",
    "min_parity_agreement": "0.95",
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> Path:
    """A WordPiece tokenizer trained on sms-spam and a 2-layer, 32-wide BERT, saved in HF format."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(read_csv(sms_spam / "train.csv").texts, vocab_size=1500, min_frequency=2)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def small_sms(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("small-sms")
    write_csv(directory / "train.csv", read_csv(sms_spam / "train.csv").examples[:640])
    write_csv(directory / "test.csv", read_csv(sms_spam / "test.csv").examples[:200])
    return directory / "train.csv", directory / "test.csv"


def train(tmp: Path, train_csv: Path, test_csv: Path, base: Path, *, ranks: int = 1, **extra: str) -> Path:
    model_dir = tmp / f"model-{ranks}"
    args = [
        "--train",
        str(train_csv),
        "--test",
        str(test_csv),
        "--model-dir",
        str(model_dir),
        "--checkpoint-dir",
        str(tmp / f"ckpt-{ranks}"),
        "--base_model",
        str(base),
    ]
    for name, value in {**TINY, **extra}.items():
        args += [f"--{name}", value]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [*(launcher if ranks > 1 else [sys.executable]), str(ROOT / "training" / "train.py"), *args]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return model_dir


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, small_sms: tuple[Path, Path], tiny_base: Path) -> Path:
    return train(tmp_path_factory.mktemp("transformer"), *small_sms, tiny_base)


def test_artifact_carries_its_tokenizer_and_verifies(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    assert loaded.preprocessing["family"] == "hf-tokenizer" and loaded.preprocessing["max_length"] == 32
    assert loaded.manifest["featurizer_files"] == ["tokenizer.json"]
    assert "tokenizer.json" in loaded.manifest["files"]


def test_export_has_dynamic_batch_and_length(artifact: Path) -> None:
    import onnx

    graph = onnx.load(str(artifact / "model.fp32.onnx")).graph
    names = [i.name for i in graph.input]
    assert names == ["input_ids", "attention_mask"]
    for tensor in graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_param  # symbolic, not fixed


def test_int8_is_smaller_and_passes_parity(artifact: Path) -> None:
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["model_family"] == "transformer"
    assert metrics["sizes"]["model.int8.onnx"] < metrics["sizes"]["model.fp32.onnx"]
    assert metrics["parity"]["passed"] is True
    assert metrics["quantization"]["per_channel"] is True


def test_serving_needs_neither_torch_nor_transformers(artifact: Path) -> None:
    code = (
        "import sys, json; from skiff.cli import main;"
        f"main(['predict', '--json', '--model', {str(artifact)!r}, 'Free entry! Win a prize now']);"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')], 'heavy import'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)[0]["label"] in ("ham", "spam")


def test_token_ids_match_the_transformers_tokenizer_on_the_dev_set(tiny_base: Path, sms_spam: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    texts = read_csv(sms_spam / "test.csv").texts
    ours = TokenizerFeaturizer(TokenizerSpec(max_length=32), tiny_base).encode(texts)
    reference = PreTrainedTokenizerFast(tokenizer_file=str(tiny_base / "tokenizer.json"), pad_token="[PAD]")(
        texts, padding="longest", truncation=True, max_length=32, return_tensors="np"
    )
    assert np.array_equal(ours["input_ids"], reference["input_ids"])
    assert np.array_equal(ours["attention_mask"], reference["attention_mask"])


def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, small_sms: tuple[Path, Path], tiny_base: Path
) -> None:
    """DDP over gloo, 2 ranks × 8 rows vs 1 rank × 16 rows: same weights within 1e-4."""
    one = train(tmp_path, *small_sms, tiny_base, ranks=1, epochs="1")
    two = train(tmp_path, *small_sms, tiny_base, ranks=2, epochs="1")
    first = torch.load(sorted((tmp_path / "ckpt-1").glob("*.pt"))[-1], weights_only=False)["model"]
    second = torch.load(sorted((tmp_path / "ckpt-2").glob("*.pt"))[-1], weights_only=False)["model"]
    worst = max(float((first[k] - second[k]).abs().max()) for k in first)
    assert worst < 1e-4, worst
    assert json.loads((two / "metrics.json").read_text())["training"]["world_size"] == 2
    assert json.loads((one / "metrics.json").read_text())["training"]["world_size"] == 1


def test_batch_must_split_evenly_over_ranks_and_accumulation(
    tmp_path: Path, small_sms: tuple[Path, Path], tiny_base: Path
) -> None:
    from training.train import main

    code = main(
        [
            "--train",
            str(small_sms[0]),
            "--model-dir",
            str(tmp_path / "m"),
            "--base_model",
            str(tiny_base),
            "--failure-file",
            str(tmp_path / "failure"),
            *[a for k, v in {**TINY, "gradient_accumulation_steps": "3"}.items() for a in (f"--{k}", v)],
        ]
    )
    assert code == 2
    assert "batch_size should be a multiple of world_size × gradient_accumulation_steps (got: 16 for 1 × 3)" in (
        (tmp_path / "failure").read_text()
    )


def test_transformer_hyperparameters_have_their_own_defaults() -> None:
    hp = Hyperparameters(model_family="transformer")
    assert (hp.epochs, hp.learning_rate) == (3, 5e-5)
    assert Hyperparameters().learning_rate == 0.02


def test_interrupted_transformer_run_resumes_to_identical_weights(
    tmp_path: Path, small_sms: tuple[Path, Path], tiny_base: Path
) -> None:
    from training.transformer import fit_transformer

    rows = read_csv(small_sms[0]).examples[:96]
    texts, labels = [e.text for e in rows], [int(e.label == "spam") for e in rows]
    hp = Hyperparameters.from_strings({**TINY, "epochs": "2"})
    featurizer = TokenizerFeaturizer(TokenizerSpec(max_length=32), tiny_base)

    class Interrupted(Exception):
        pass

    def run(checkpoints: Path, stop_after: int | None = None) -> dict[str, torch.Tensor]:
        def on_epoch_end(record: object) -> None:
            if stop_after is not None and record.epoch == stop_after:  # type: ignore[attr-defined]
                raise Interrupted

        result = fit_transformer(
            texts,
            labels,
            texts[:16],
            labels[:16],
            ["ham", "spam"],
            hp,
            tiny_base,
            featurizer,
            dataset_fingerprint="f",
            checkpoint_dir=checkpoints,
            on_epoch_end=on_epoch_end,
        )
        return result.model.state_dict()

    straight = run(tmp_path / "a")
    with pytest.raises(Interrupted):
        run(tmp_path / "b", stop_after=1)
    resumed = run(tmp_path / "b")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
