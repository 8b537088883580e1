"""The transformer family with a tiny, randomly initialized encoder (seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skiff.data.dataset import read_csv
from skiff.model.artifact import load_artifact
from skiff.model.features import TokenizerFeaturizer, TokenizerSpec
from skiff.model.hyperparameters import Hyperparameters
from tests.conftest import predict_in_a_fresh_process
from tests.training.conftest import run_job

TINY = {
    "model_family": "transformer",
    "epochs": "2",
    "batch_size": "16",
    "learning_rate": "0.001",
    "max_length": "32",
    "min_parity_agreement": "0.95",
}


def train(tmp: Path, train_csv: Path, test_csv: Path, base: Path, **extra: str) -> Path:
    return run_job(tmp, train_csv, test_csv, {**TINY, "base_model": str(base), **extra})


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
    assert metrics["quantization"]["method"] == "static"


def test_a_texts_int8_scores_do_not_depend_on_its_batch(artifact: Path, small_sms: tuple[Path, Path]) -> None:
    """Static scales: alone, or padded inside a batch of longer texts, a text gets the same scores."""
    from skiff.model.predictor import Predictor

    predictor = Predictor.from_directory(artifact)
    texts = list(read_csv(small_sms[1]).texts[:64])
    short = min(texts, key=len)
    alone = predictor.predict([short])[0].scores
    batched = predictor.predict([*texts, short])[-1].scores
    assert max(abs(alone[label] - batched[label]) for label in alone) <= 1e-6
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["parity"]["batch_max_score_difference"] <= 1e-6  # over the whole eval split, batch 1 vs 64


def test_the_served_graph_runs_onnxruntimes_fused_attention_on_int8_projections(artifact: Path) -> None:
    import onnx

    metrics = json.loads((artifact / "metrics.json").read_text())
    assert metrics["onnx_exporter"] == "torchscript"
    assert metrics["fused_operators"]["MultiHeadAttention"] == 2  # one per layer of the tiny encoder
    operators = [node.op_type for node in onnx.load(str(artifact / "model.int8.onnx")).graph.node]
    assert operators.count("MultiHeadAttention") == 2
    assert "MatMul" not in operators  # Q, K, V, output and feed-forward projections are all int8
    assert operators.count("QLinearMatMul") == 2 * 6


def test_fusing_attention_leaves_the_scores_as_they_were(
    tmp_path: Path, tiny_base: Path, small_sms: tuple[Path, Path]
) -> None:
    import shutil

    import onnxruntime as ort

    from training.export import TORCHSCRIPT, export_onnx, fuse_attention
    from training.families.transformer import TransformerClassifier, TransformerWithProbabilities, load_encoder

    featurizer = TokenizerFeaturizer(TokenizerSpec(max_length=32), tiny_base)
    texts = list(read_csv(small_sms[1]).texts[:64])
    exported = TransformerWithProbabilities(TransformerClassifier(load_encoder(tiny_base)[0], 2))
    export_onnx(exported, tmp_path / "plain.onnx", featurizer.encode(texts[:2]), TORCHSCRIPT)
    shutil.copy(tmp_path / "plain.onnx", tmp_path / "fused.onnx")
    assert fuse_attention(tmp_path / "fused.onnx", num_heads=2, hidden_size=32)["MultiHeadAttention"] == 2

    inputs = featurizer.encode(texts)  # padded to the longest: the fused kernel must mask like the plain graph
    plain, fused = (
        ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
        for name in ("plain.onnx", "fused.onnx")
    )
    np.testing.assert_allclose(fused, plain, atol=1e-6)


def test_encoders_other_than_bert_are_exported_as_they_are() -> None:
    from training.families.transformer import attention_fusion

    assert attention_fusion({"model_type": "distilbert", "n_heads": 12, "dim": 768}) is None
    assert attention_fusion({"model_type": "bert", "num_attention_heads": 12, "hidden_size": 384}) is not None


def test_serving_needs_neither_torch_nor_transformers(artifact: Path) -> None:
    assert predict_in_a_fresh_process(artifact, "Free entry! Win a prize now")[0]["label"] in ("ham", "spam")


def test_token_ids_match_the_transformers_tokenizer_on_the_dev_set(tiny_base: Path, sms_spam: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    texts = read_csv(sms_spam / "test.csv").texts
    ours = TokenizerFeaturizer(TokenizerSpec(max_length=32), tiny_base).encode(texts)
    reference = PreTrainedTokenizerFast(tokenizer_file=str(tiny_base / "tokenizer.json"), pad_token="[PAD]")(
        texts, padding="longest", truncation=True, max_length=32, return_tensors="np"
    )
    assert np.array_equal(ours["input_ids"], reference["input_ids"])
    assert np.array_equal(ours["attention_mask"], reference["attention_mask"])


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
    assert Hyperparameters().learning_rate == 30.0  # the bag family's linear head (plain SGD)
