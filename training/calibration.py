"""Temperature scaling: scores a user can threshold.

A model trained to minimise cross-entropy until its training loss is near zero answers 1.000
for texts it barely knows. One scalar fixes most of that (Guo et al., 2017): divide the logits
by a temperature T fitted to minimise the negative log-likelihood on held-out rows. The
exported model carries T inside its graph (:class:`CalibratedSoftmax`, the last step of every
family's exported module), so serving is unchanged
and every label stays the same (T > 0 keeps the order of the scores).

T is fitted on the validation split (held out from the training rows) and the ECE before and
after is measured on the evaluation split, which T never saw (:func:`calibration_report`).
Without a validation split (``validation_fraction=0``) T can only be fitted on the evaluation
split itself; the ECE after scaling is then cross-fitted over its two hashed halves instead
(T fitted on one half, measured on the other, both ways) and the shipped T is fitted on all of
it (:func:`cross_fitted_calibration_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from skiff.model.metrics import expected_calibration_error

LOG_T_RANGE = (-3.0, 3.0)
"""T between e^-3 ≈ 0.05 and e^3 ≈ 20: wider is never needed in practice, and the search is
bounded, so a split with perfectly separated classes cannot send T to infinity."""
ECE_BINS = 15
EPSILON = 1e-12


def log_scores(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (softmax is blind to it): what the exported model outputs, logged."""
    return np.log(np.clip(probabilities.astype(np.float64), EPSILON, 1.0))


def scaled(log_probabilities: np.ndarray, temperature: float) -> np.ndarray:
    z = log_probabilities / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def negative_log_likelihood(log_probabilities: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = scaled(log_probabilities, temperature)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, EPSILON, 1.0)).mean())


def smoothed_targets(y: np.ndarray, classes: int) -> np.ndarray:
    """Platt's targets: the true label gets 1 - eps, the others share eps, eps = 1 / (rows + 2).

    Fitted to hard 0/1 labels, a split the model classifies without a single error drives T
    to its lower bound (every score becomes 0 or 1: 47 demo validation rows did that); the
    smoothed targets say that a few hundred correct answers are evidence of about that much
    confidence, not of certainty, and vanish as the rows grow."""
    eps = 1.0 / (len(y) + 2)
    targets = np.full((len(y), classes), eps / max(1, classes - 1))
    targets[np.arange(len(y)), y] = 1.0 - eps
    return targets


def _cross_entropy(log_probabilities: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    p = np.clip(scaled(log_probabilities, temperature), EPSILON, 1.0)
    return float(-(targets * np.log(p)).sum(1).mean())


def fit_temperature(probabilities: np.ndarray, y_true: Sequence[int]) -> float:
    """The T minimising the cross-entropy to Platt's smoothed targets (:func:`smoothed_targets`):
    golden-section search over log T (unimodal in T for a fixed set of logits)."""
    y = np.asarray(y_true)
    if len(y) == 0:
        return 1.0
    logs = log_scores(probabilities)
    targets = smoothed_targets(y, probabilities.shape[1])
    low, high = LOG_T_RANGE
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (_cross_entropy(logs, targets, float(np.exp(x))) for x in (a, b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _cross_entropy(logs, targets, float(np.exp(a)))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _cross_entropy(logs, targets, float(np.exp(b)))
    return float(np.exp((low + high) / 2))


def calibration_report(
    validation_probabilities: np.ndarray,
    validation_y: Sequence[int],
    eval_probabilities: np.ndarray,
    eval_y: Sequence[int],
) -> dict[str, Any]:
    """T fitted on the validation rows; ECE and NLL before and after it, on the eval rows."""
    y = np.asarray(eval_y)
    temperature = fit_temperature(validation_probabilities, validation_y)
    logs = log_scores(eval_probabilities)
    return {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": "validation split",
        "fitted_rows": int(len(validation_y)),
        "ece_before": expected_calibration_error(eval_probabilities, y, ECE_BINS),
        "ece": expected_calibration_error(scaled(logs, temperature), y, ECE_BINS),
        "nll_before": negative_log_likelihood(logs, y, 1.0),
        "nll": negative_log_likelihood(logs, y, temperature),
        "bins": ECE_BINS,
        "measured_on": "eval split",
    }


def cross_fitted_calibration_report(
    probabilities: np.ndarray, y_true: Sequence[int], halves: np.ndarray
) -> dict[str, Any]:
    """Without a validation split: T fitted on all eval rows; ECE before, and after scaling
    cross-fitted over ``halves`` (a 0/1 mask per row: T fitted on one half is scored on the other)."""
    y = np.asarray(y_true)
    temperature = fit_temperature(probabilities, y)
    logs = log_scores(probabilities)
    after = np.empty_like(probabilities, dtype=np.float64)
    for half in (0, 1):
        fit_rows, score_rows = halves != half, halves == half
        t = fit_temperature(probabilities[fit_rows], y[fit_rows]) if fit_rows.any() else temperature
        after[score_rows] = scaled(logs[score_rows], t)
    return {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": "eval split",
        "fitted_rows": int(len(y)),
        "ece_before": expected_calibration_error(probabilities, y, ECE_BINS),
        "ece": expected_calibration_error(after, y, ECE_BINS),
        "nll_before": negative_log_likelihood(logs, y, 1.0),
        "nll": negative_log_likelihood(logs, y, temperature),
        "bins": ECE_BINS,
        "measured_on": "eval split; ECE after scaling cross-fitted over its two hashed halves",
    }


class CalibratedSoftmax(nn.Module):
    """The last step of every exported model: softmax(logits / T), T = 1 until it is fitted."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inverse_temperature", torch.ones((), dtype=torch.float32))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float() * self.inverse_temperature, dim=-1)

    def set_temperature(self, temperature: float) -> None:
        self.inverse_temperature.fill_(1.0 / temperature)


def calibrated_softmax_of(model: nn.Module) -> CalibratedSoftmax:
    found = [m for m in model.modules() if isinstance(m, CalibratedSoftmax)]
    if len(found) != 1:
        raise TypeError(f"expected one CalibratedSoftmax in the exported model (got: {len(found)})")
    return found[0]
