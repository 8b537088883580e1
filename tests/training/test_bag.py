"""The bag family's model: TF-IDF weights from training, L2-normalised pooling, and its two heads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from skiff.data.dataset import read_csv, split_dataset
from skiff.model.artifact import MODEL_FP32
from skiff.model.features import PADDING_ID
from skiff.model.hyperparameters import Hyperparameters
from skiff.model.predictor import OUTPUT_NAME
from training.batches import RaggedTokens
from training.export import DYNAMO, TORCHSCRIPT, export_onnx
from training.families.bag import BagOfNgrams, WithProbabilities, inverse_document_frequency
from training.pipeline import TrainingData, build_artifact


def test_idf_counts_each_training_text_once_per_bucket() -> None:
    train = RaggedTokens.from_lists([[5, 5, 7], [7], [3]], PADDING_ID)
    idf = inverse_document_frequency(train, buckets=8)
    assert idf[PADDING_ID] == 0.0
    assert idf[5].item() == pytest.approx(math.log(4 / 2) + 1)  # in one text of three, twice there
    assert idf[7].item() == pytest.approx(math.log(4 / 3) + 1)
    assert idf[3].item() == pytest.approx(math.log(4 / 2) + 1)
    assert idf[1] == 0.0  # never seen: like a term outside the vocabulary, it does not count


def test_linear_head_scores_are_the_tfidf_weighted_rows_over_the_weights_norm() -> None:
    idf = torch.tensor([0.0, 1.0, 2.0, 3.0])
    model = BagOfNgrams(3, 64, 2, head="linear", idf=idf)
    with torch.no_grad():
        model.embedding.weight[1:] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    logits = model(torch.tensor([[1, 3, 3]]))
    expected = (1.0 * torch.tensor([1.0, 0.0]) + 2 * 3.0 * torch.tensor([2.0, -1.0])) / math.sqrt(1 + 9 + 9)
    assert torch.allclose(logits[0], expected)


def test_an_ngram_training_never_saw_changes_no_score() -> None:
    model = BagOfNgrams(3, 64, 2, head="linear", idf=torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with torch.no_grad():
        model.embedding.weight[1:3].normal_()
    assert torch.allclose(model(torch.tensor([[1, 2]])), model(torch.tensor([[1, 3, 2, 3]])))


def test_linear_head_padding_changes_no_score() -> None:
    model = BagOfNgrams(3, 64, 2, head="linear", idf=torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with torch.no_grad():
        model.embedding.weight.normal_()
        model.embedding.weight[PADDING_ID] = 0
    alone = model(torch.tensor([[2, 3]]))
    padded = model(torch.tensor([[2, 3, 0, 0, 0], [1, 1, 1, 2, 3]]))[:1]
    assert torch.allclose(alone, padded)


def test_linear_head_rows_start_at_zero_so_unseen_ngrams_add_nothing() -> None:
    model = BagOfNgrams(16, 64, 3, head="linear")
    assert model.embedding.weight.shape == (17, 3)  # one score per label, no bottleneck
    assert not model.embedding.weight.any()


def test_embedding_head_keeps_its_width_and_a_classifier() -> None:
    model = BagOfNgrams(16, 8, 3, head="embedding", dropout=0.1)
    assert model.embedding.weight.shape == (17, 8)
    assert model(torch.tensor([[1, 2, 0]])).shape == (1, 3)
    assert model.row_logits(torch.tensor([1, 2])).shape == (2, 3)


@pytest.mark.parametrize("head", ["linear", "embedding"])
def test_each_bag_head_learns_the_demo_data(head: str, demo_csv: Path, tmp_path: Path) -> None:
    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    hp = Hyperparameters(epochs=3, buckets=1 << 12, embedding_dim=16, char_ngrams="none", bag_head=head)
    metrics = build_artifact(TrainingData(train, evaluation, "hashed-split"), hp, tmp_path)
    assert metrics["eval"]["int8"]["accuracy"] >= 0.9
    tables = [t for t in onnx.load(str(tmp_path / MODEL_FP32)).graph.initializer if len(t.dims) == 2]
    width = max(tables, key=lambda t: t.dims[0]).dims[1]
    assert width == (len(train.label_counts()) if head == "linear" else 16)


@pytest.mark.parametrize("head", ["linear", "embedding"])
def test_torchscript_and_dynamo_exports_of_the_bag_score_alike(head: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BagOfNgrams(64, 8, 3, head=head, idf=torch.rand(65) * 4)
    with torch.no_grad():
        model.embedding.weight.normal_()
    exportable = WithProbabilities(model)
    ids = np.array([[5, 9, 9, 0, 0], [1, 2, 3, 4, 64], [7, 0, 0, 0, 0]], dtype=np.int64)
    scores = {}
    for exporter in (TORCHSCRIPT, DYNAMO):
        export_onnx(exportable, tmp_path / f"{exporter}.onnx", {"token_ids": ids[:2, :3]}, exporter)
        session = ort.InferenceSession(str(tmp_path / f"{exporter}.onnx"), providers=["CPUExecutionProvider"])
        (scores[exporter],) = session.run([OUTPUT_NAME], {"token_ids": ids})  # other batch and length
    with torch.no_grad():
        expected = exportable(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(scores[TORCHSCRIPT], expected, atol=1e-6)
    np.testing.assert_allclose(scores[DYNAMO], expected, atol=1e-6)


def test_export_refuses_an_unknown_exporter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected exporter 'dynamo' or 'torchscript' \\(got: 'jit'\\)"):
        export_onnx(
            WithProbabilities(BagOfNgrams(8, 2, 2)),
            tmp_path / "m.onnx",
            {"token_ids": np.ones((1, 2), np.int64)},
            "jit",
        )
