"""Classification metrics, numpy only, so training, the quality gate and tests agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion_matrix[i][j]`` counts rows whose true label is ``labels[i]`` and predicted
    label is ``labels[j]``. A class with no predictions has precision 0 (not NaN).
    """
    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"expected y_true and y_pred of equal length (got: {true.shape} and {pred.shape})")
    n = len(labels)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for i, label in enumerate(labels):
        tp = matrix[i, i]
        predicted = matrix[:, i].sum()
        actual = matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[label] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(actual),
        }
    return {
        "accuracy": float((true == pred).mean()) if len(true) else 0.0,
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
        "rows": int(len(true)),
    }


def majority_baseline_accuracy(y_true: Sequence[int]) -> float:
    """Accuracy of always answering the most frequent class: the floor any model must beat."""
    counts = np.bincount(np.asarray(y_true, dtype=np.int64))
    return float(counts.max() / counts.sum()) if counts.size else 0.0


def expected_calibration_error(probabilities: np.ndarray, y_true: Sequence[int], bins: int = 15) -> float:
    """ECE: how far the top score is from the accuracy it claims, averaged over equal-width
    confidence bins weighted by their rows (0 is perfectly calibrated)."""
    y = np.asarray(y_true)
    if len(y) == 0:
        return 0.0
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == y
    # Bin i holds confidences in (i/bins, (i+1)/bins]; the top score of k classes is >= 1/k > 0.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.sum() * abs(float(correct[members].mean()) - float(confidence[members].mean()))
    return gap / len(y)
