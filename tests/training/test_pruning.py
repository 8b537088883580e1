"""Bag table pruning: only rows that matter ship, the remap is exact, and serving stays the same
whatever a text is batched with. ``pytest -k prun`` selects these."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from skiff.data.dataset import read_csv, split_dataset
from skiff.model.artifact import MODEL_FP32, MODEL_INT8, load_artifact
from skiff.model.features import PADDING_ID
from skiff.model.hyperparameters import Hyperparameters
from skiff.model.predictor import MAX_BATCH_TEXTS, Predictor
from tests.conftest import predict_in_a_fresh_process
from training.families import LabelledTexts
from training.families.bag import KEPT_BUCKETS_FILE, WithProbabilities, prepare, prune
from training.pipeline import TrainingData, build_artifact

SMALL = {"epochs": 2, "buckets": 1 << 12, "embedding_dim": 16, "char_ngrams": "none"}


@pytest.fixture(scope="module")
def metrics(sms_artifact: Path) -> dict:
    return json.loads((sms_artifact / "metrics.json").read_text())


def test_pruned_bag_by_default_serves_under_2_5_mb(metrics: dict) -> None:
    compression = metrics["compression"]
    assert (compression["method"], compression["prune_rows"]) == ("bag-table-rows", "trained")
    assert compression["kept_rows"] == compression["trained_rows"] < compression["table_rows"]
    assert metrics["sizes"]["served"] <= 2_500_000


def test_pruned_bag_accuracy_stays_within_the_tolerance_of_the_unpruned_model(metrics: dict) -> None:
    compression = metrics["compression"]
    floor = compression["unpruned_validation_accuracy"] - compression["tolerance"]
    assert compression["validation_accuracy"] >= floor
    assert metrics["eval"]["int8"]["accuracy"] >= floor


def test_pruned_bag_text_alone_or_padded_among_63_others_scores_the_same(sms_artifact: Path, sms_spam: Path) -> None:
    predictor = Predictor.from_directory(sms_artifact, threads=1)
    others = read_csv(sms_spam / "test.csv").texts[: MAX_BATCH_TEXTS - 1]
    assert max(len(t) for t in others) > 3 * len(others[0])  # the batch pads the short text a lot
    for text in ("Free entry! Win £1000 now, text WIN to 80086", "ok"):
        alone = predictor.probabilities([text])[0]
        batched = predictor.probabilities([*others[:30], text, *others[30:]])[30]
        assert alone.argmax() == batched.argmax()
        assert np.abs(alone - batched).max() <= 1e-5  # float32 rounding (see the parity test below)


def test_pruned_bag_parity_is_checked_at_batch_1_and_at_the_largest_request(metrics: dict) -> None:
    parity = metrics["parity"]
    assert set(parity["batch_sizes"]) == {"1", str(MAX_BATCH_TEXTS)}
    # Float32 rounding only: onnxruntime sums a padded row's n-grams in a different association
    # than the same row alone (its vector lanes depend on the width). On sms-spam test, 611 of
    # 1,114 texts move, by at most 1.1e-6 (about ten float32 ulps near 1); no label changes.
    assert parity["batch_label_agreement"] == 1.0 and parity["batch_max_score_difference"] <= 1e-5


def test_pruned_bag_kept_buckets_travel_checksummed_in_the_artifact(sms_artifact: Path) -> None:
    manifest = json.loads((sms_artifact / "manifest.json").read_text())
    assert manifest["featurizer_files"] == [KEPT_BUCKETS_FILE]
    loaded = load_artifact(sms_artifact, only=[MODEL_INT8])
    assert loaded.preprocessing["kept_buckets_file"] == KEPT_BUCKETS_FILE and loaded.preprocessing["version"] == 4


def test_pruned_bag_serves_in_a_fresh_process_without_torch(sms_artifact: Path) -> None:
    (answer,) = predict_in_a_fresh_process(sms_artifact, "WINNER!! claim your free prize now, call 09061701461")
    assert answer["label"] == "spam"


def test_pruned_model_answers_exactly_as_the_trained_one_with_unkept_rows_zeroed_and_unseen(
    demo_csv: Path, tmp_path: Path
) -> None:
    rows = read_csv(demo_csv).examples
    labels = sorted({e.label for e in rows})
    targets = torch.as_tensor([labels.index(e.label) for e in rows])
    texts = [e.text for e in rows]
    data = LabelledTexts(texts[:400], targets[:400], texts[400:], targets[400:], labels)
    hp = Hyperparameters(**SMALL, prune_rows="0.5")
    family = prepare(data, hp, tmp_path)
    torch.manual_seed(0)
    trained = family.task.build_model()
    with torch.no_grad():
        trained.embedding.weight.normal_()  # rows that separate the labels: they rank by importance
        trained.embedding.weight[PADDING_ID] = 0
    shipped = prune(trained, family.task, hp, family.featurizer, tmp_path)
    kept = torch.from_numpy(np.load(tmp_path / KEPT_BUCKETS_FILE).astype(np.int64))
    assert len(kept) == shipped.compression["kept_rows"] == math.ceil(0.5 * shipped.compression["trained_rows"])

    zeroed = family.task.build_model()
    unkept = torch.ones(len(zeroed.embedding.weight), dtype=torch.bool).index_fill(0, kept, False)
    unkept[PADDING_ID] = False
    with torch.no_grad():
        zeroed.load_state_dict(trained.state_dict())
        zeroed.embedding.weight[unkept] = 0
        zeroed.idf_codes[unkept] = 0  # an unkept n-gram weighs as one training never saw: nothing
    raw = torch.from_numpy(family.featurizer.encode(texts[400:])["token_ids"])
    remapped = torch.from_numpy(shipped.featurizer.encode(texts[400:])["token_ids"])
    assert (remapped == PADDING_ID).equal(raw == PADDING_ID)
    with torch.no_grad():
        expected = WithProbabilities(zeroed.eval())(raw)
        assert torch.allclose(shipped.exportable(remapped), expected, atol=1e-6)


def test_prune_rows_trained_ships_every_trained_row_and_no_other(demo_csv: Path, tmp_path: Path) -> None:
    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    hp = Hyperparameters(**SMALL, prune_rows="trained")
    metrics = build_artifact(TrainingData(train, evaluation, "hashed-split"), hp, tmp_path)
    compression = metrics["compression"]
    assert compression["kept_rows"] == compression["trained_rows"] < compression["table_rows"] == (1 << 12) + 1
    tables = [t for t in onnx.load(str(tmp_path / MODEL_FP32)).graph.initializer if len(t.dims) == 2]
    table = max(tables, key=lambda t: t.dims[0])  # the embedding table; the head is labels x 16
    assert table.dims[0] == compression["kept_rows"] + 2  # padding, the kept rows, the zero row of all others


def test_prune_rows_auto_ships_the_smallest_share_within_the_tolerance(demo_csv: Path, tmp_path: Path) -> None:
    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    hp = Hyperparameters(**SMALL, prune_rows="auto")
    compression = build_artifact(TrainingData(train, evaluation, "hashed-split"), hp, tmp_path)["compression"]
    floor = compression["unpruned_validation_accuracy"] - compression["tolerance"]
    *refused, chosen = compression["tried"]
    assert all(t["validation_accuracy"] < floor for t in refused)
    assert chosen["validation_accuracy"] >= floor and chosen["rows"] == compression["kept_rows"]
