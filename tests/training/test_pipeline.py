"""The default model on the real sms-spam dev set, trained exactly as SageMaker runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from skiff.data.dataset import read_csv
from skiff.model.artifact import load_artifact
from skiff.model.predictor import Predictor


@pytest.fixture(scope="module")
def metrics(sms_artifact: Path) -> dict:
    return json.loads((sms_artifact / "metrics.json").read_text())


def test_int8_model_meets_the_quality_target_on_the_test_split(metrics: dict) -> None:
    int8 = metrics["eval"]["int8"]
    assert metrics["eval"]["kind"] == "test-channel" and metrics["eval"]["rows"] == 1114
    assert int8["accuracy"] >= 0.987
    assert int8["per_class"]["spam"]["f1"] >= 0.95


def test_int8_accuracy_is_within_three_tenths_of_a_point_of_fp32(metrics: dict) -> None:
    assert abs(metrics["eval"]["int8"]["accuracy"] - metrics["eval"]["fp32"]["accuracy"]) <= 0.003


def test_parity_check_is_recorded_and_passed(metrics: dict) -> None:
    parity = metrics["parity"]
    assert parity["passed"] is True
    assert parity["label_agreement"] >= parity["min_label_agreement"] == 0.99
    assert 0.0 <= parity["max_score_difference"] < 0.1


def test_int8_file_holds_the_table_in_one_byte_per_weight(sms_artifact: Path, metrics: dict) -> None:
    int8 = onnx.load(str(sms_artifact / "model.int8.onnx"))
    (table,) = [t for t in int8.graph.initializer if t.name.endswith("embedding.weight_quantized")]
    assert table.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    # fp32: 4 bytes per weight and one idf byte per row; int8: 1 byte per weight and the same idf byte
    assert metrics["sizes"]["int8_over_fp32"] <= 0.4


def test_the_bag_records_that_it_exported_with_torchscript(metrics: dict) -> None:
    assert metrics["onnx_exporter"] == "torchscript"


def test_metrics_record_training_speed_and_history(metrics: dict) -> None:
    training = metrics["training"]
    assert training["samples_per_second"] > 0
    assert [h["epoch"] for h in training["history"]] == list(range(1, training["epochs_run"] + 1))
    assert 1 <= training["best_epoch"] <= training["epochs_run"] <= training["epochs"]


def test_the_validation_split_is_held_out_of_the_training_rows_not_taken_from_the_test_set(metrics: dict) -> None:
    validation = metrics["validation"]
    assert validation["kind"] == "hashed from the training rows"
    assert metrics["training"]["rows"] + validation["rows"] == 4460  # train.csv; test.csv stays the eval split
    assert 0.05 * 4460 < validation["rows"] < 0.15 * 4460  # validation_fraction 0.1


def test_the_shipped_epoch_is_the_best_on_the_validation_split(metrics: dict) -> None:
    history = metrics["training"]["history"]
    best = max(history, key=lambda h: (h["validation_accuracy"], -h["validation_loss"]))
    assert metrics["training"]["best_epoch"] == best["epoch"]


def test_served_predictions_match_the_recorded_evaluation(sms_artifact: Path, sms_spam: Path, metrics: dict) -> None:
    """Serving rebuilds the featurizer from preprocessing.json: same inputs, same answers."""
    test = read_csv(sms_spam / "test.csv")
    predictions = Predictor.from_directory(sms_artifact).predict(test.texts)
    accuracy = np.mean([p.label == label for p, label in zip(predictions, test.labels, strict=True)])
    assert accuracy == pytest.approx(metrics["eval"]["int8"]["accuracy"])


def test_fp32_model_can_be_served_for_comparison(sms_artifact: Path) -> None:
    predictor = Predictor.from_directory(sms_artifact, model_file="model.fp32.onnx")
    assert predictor.predict(["WINNER!! claim your free prize now, call 09061701461"])[0].label == "spam"


def test_artifact_verifies(sms_artifact: Path) -> None:
    assert load_artifact(sms_artifact).labels == ["ham", "spam"]


def test_served_scores_are_temperature_scaled_with_t_from_the_validation_split(metrics: dict) -> None:
    calibration = metrics["calibration"]
    assert calibration["method"] == "temperature" and 0.05 < calibration["temperature"] < 20
    assert (calibration["fitted_on"], calibration["fitted_rows"]) == ("validation split", metrics["validation"]["rows"])
    assert calibration["measured_on"] == "eval split"  # test.csv: T never saw it
    assert 0.0 <= calibration["ece"] <= 1.0 and 0.0 <= calibration["ece_before"] <= 1.0


def test_the_learning_rate_schedule_run_is_recorded(metrics: dict) -> None:
    schedule = metrics["training"]["lr_schedule"]
    assert schedule["kind"] == "constant" and schedule["warmup_steps"] == 0
    assert schedule["total_steps"] == metrics["training"]["epochs"] * (
        metrics["training"]["rows"] // metrics["training"]["batch_size"]
    )


def test_the_default_bag_weighs_spam_up_and_records_the_weights(metrics: dict) -> None:
    weights, counts = metrics["training"]["class_weights"], metrics["training"]["label_counts"]
    assert weights["spam"] > 1.0 > weights["ham"]  # sms-spam: 13 % spam
    assert weights["spam"] * counts["spam"] == pytest.approx(weights["ham"] * counts["ham"])


def test_balanced_class_weighting_weighs_the_rare_label_up_and_says_so(sms_spam: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from skiff.data.dataset import split_dataset
    from tests.conftest import SMALL_HYPERPARAMETERS
    from training.pipeline import TrainingData, build_artifact

    train, evaluation = split_dataset(read_csv(sms_spam / "test.csv"), 0.2)
    hp = replace(SMALL_HYPERPARAMETERS, class_weighting="balanced", epochs=1)
    recorded = build_artifact(TrainingData(train, evaluation, "hashed-split"), hp, tmp_path / "model")
    weights = recorded["training"]["class_weights"]
    counts = recorded["training"]["label_counts"]
    assert weights["spam"] > 1.0 > weights["ham"]
    assert weights["spam"] * counts["spam"] == pytest.approx(weights["ham"] * counts["ham"])
