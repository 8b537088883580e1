"""Temperature scaling and the expected calibration error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skiff.model.metrics import expected_calibration_error
from training.calibration import (
    LOG_T_RANGE,
    CalibratedSoftmax,
    calibration_report,
    cross_fitted_calibration_report,
    fit_temperature,
    scaled,
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def sampled(rows: int, true_temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits, and labels drawn from softmax(logits / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(rows, 3))
    truth = softmax(logits / true_temperature)
    labels = np.array([rng.choice(3, p=p) for p in truth])
    return logits, labels


def test_scores_that_match_their_accuracy_have_an_ece_near_zero() -> None:
    logits, labels = sampled(20_000, 1.0)
    assert expected_calibration_error(softmax(logits), labels) < 0.02


def test_overconfident_scores_have_a_large_ece() -> None:
    probabilities = np.tile([[0.999, 0.001]], (100, 1))
    labels = np.array([0] * 60 + [1] * 40)  # 60 % right while claiming 99.9 %
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.399, abs=1e-6)


def test_ece_of_no_rows_is_zero() -> None:
    assert expected_calibration_error(np.zeros((0, 2)), []) == 0.0


@pytest.mark.parametrize("true_temperature", [0.5, 2.0, 4.0])
def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with(true_temperature: float) -> None:
    logits, labels = sampled(20_000, true_temperature)
    assert fit_temperature(softmax(logits), labels) == pytest.approx(true_temperature, rel=0.1)


def test_a_split_classified_without_error_does_not_push_scores_to_certainty() -> None:
    """47 correct rows at 70-90 % confidence: hard labels would fit the smallest T (every score
    0 or 1); the smoothed targets stop at about the confidence 47 correct answers support."""
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.7, 0.9, 47)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    temperature = fit_temperature(probabilities, np.zeros(47, dtype=int))
    sharpened = scaled(np.log(probabilities), temperature)[:, 0]
    assert temperature > np.exp(LOG_T_RANGE[0]) * 1.5
    assert 0.95 < np.median(sharpened) < 0.999


def test_separable_rows_keep_the_temperature_bounded() -> None:
    probabilities = np.tile([[1.0 - 1e-9, 1e-9]], (50, 1))
    assert 0.04 < fit_temperature(probabilities, np.zeros(50, dtype=int)) < 21


def test_t_fitted_on_validation_rows_lowers_the_ece_of_overconfident_scores_on_eval_rows() -> None:
    logits, labels = sampled(4_000, 3.0)
    report = calibration_report(softmax(logits[:2000]), labels[:2000], softmax(logits[2000:]), labels[2000:])
    assert report["temperature"] == pytest.approx(fit_temperature(softmax(logits[:2000]), labels[:2000]))
    assert (report["fitted_on"], report["fitted_rows"], report["measured_on"]) == (
        "validation split",
        2000,
        "eval split",
    )
    assert report["ece"] < report["ece_before"] / 3
    assert report["nll"] < report["nll_before"]


def test_without_validation_rows_the_ece_after_scaling_is_cross_fitted_on_the_eval_split() -> None:
    logits, labels = sampled(4_000, 3.0)
    halves = np.arange(len(labels)) % 2
    report = cross_fitted_calibration_report(softmax(logits), labels, halves)
    assert report["fitted_on"] == "eval split" and "cross-fitted" in report["measured_on"]
    assert report["ece"] < report["ece_before"] / 3
    assert report["nll"] < report["nll_before"]


def test_the_exported_softmax_divides_the_logits_by_t_and_keeps_every_label() -> None:
    logits = torch.randn(64, 4) * 5
    softmax_layer = CalibratedSoftmax()
    assert torch.allclose(softmax_layer(logits), torch.softmax(logits, dim=-1))  # T = 1 until fitted
    softmax_layer.set_temperature(2.5)
    out = softmax_layer(logits)
    assert torch.allclose(out, torch.softmax(logits / 2.5, dim=-1), atol=1e-6)
    assert torch.equal(out.argmax(1), logits.argmax(1))
    assert np.allclose(scaled(np.log(softmax(logits.numpy().astype(np.float64))), 2.5), out.numpy(), atol=1e-5)


def test_the_artifact_serves_the_raw_scores_divided_by_its_temperature(demo_csv: Path, tmp_path: Path) -> None:
    """The same training with calibration none and temperature: the same labels, and the served
    scores of the second are exactly the first's scaled by the T its metrics record."""
    from dataclasses import replace

    from skiff.data.dataset import read_csv, split_dataset
    from skiff.model.predictor import Predictor
    from tests.conftest import SMALL_HYPERPARAMETERS
    from training.pipeline import TrainingData, build_artifact

    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    data = TrainingData(train, evaluation, "hashed-split")
    served = {}
    for calibration in ("none", "temperature"):
        metrics = build_artifact(data, replace(SMALL_HYPERPARAMETERS, calibration=calibration), tmp_path / calibration)
        assert metrics["calibration"]["method"] == calibration
        predictions = Predictor.from_directory(tmp_path / calibration).predict(list(evaluation.texts[:50]))
        labels = sorted(predictions[0].scores)
        served[calibration] = (
            [p.label for p in predictions],
            np.array([[p.scores[label] for label in labels] for p in predictions]),
            metrics["calibration"].get("temperature"),
        )
    raw_labels, raw, _ = served["none"]
    labels, calibrated, temperature = served["temperature"]
    assert labels == raw_labels and temperature != pytest.approx(1.0)
    assert np.allclose(calibrated, scaled(np.log(np.clip(raw, 1e-12, 1)), temperature), atol=2e-3)
