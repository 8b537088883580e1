"""The quality gate: a candidate reaches production only if it is at least as good.

Choice (documented in the README): the completion handler evaluates *both* the candidate's
and production's int8 models with onnxruntime on the same rows — the evaluation split of the
candidate's dataset version (rows whose text hashes into the split; stable as data grows).
Neither side's self-reported metrics are trusted for the comparison, and a production model
trained on older data is judged on today's data. The candidate must also have passed its
fp32/int8 parity check. With nothing in production, the candidate must beat the
majority-class baseline by ``baseline_margin``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skiff import settings as env
from skiff.data.dataset import Example
from skiff.errors import ConfigError
from skiff.model.metrics import classification_report
from skiff.model.predictor import Predictor

METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class GateSettings:
    metric: str = "accuracy"
    tolerance: float = 0.0  # candidate may trail production by this much and still pass
    baseline_margin: float = 0.02  # the first model must beat always-the-majority-label by this much

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"gate metric should be one of {list(METRICS)} (got: {self.metric!r})")
        if self.tolerance < 0 or self.baseline_margin < 0:
            raise ConfigError(
                f"tolerance and baseline_margin should be >= 0 (got: {self.tolerance}, {self.baseline_margin})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GateSettings:
        e = os.environ if environ is None else environ
        return cls(
            metric=e.get("SKIFF_GATE_METRIC") or "accuracy",
            tolerance=env.number("SKIFF_GATE_TOLERANCE", 0.0, e),
            baseline_margin=env.number("SKIFF_GATE_BASELINE_MARGIN", 0.02, e),
        )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    candidate_score: float
    reference_score: float
    reference: str  # a production version id, or "majority-baseline"
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def score(predicted: Sequence[str], true: Sequence[str], metric: str) -> float:
    """``metric`` over label names; a label a model cannot produce simply counts as wrong."""
    labels = sorted(set(true) | set(predicted))
    index = {label: i for i, label in enumerate(labels)}
    report = classification_report([index[t] for t in true], [index[p] for p in predicted], labels)
    if metric == "macro_f1":
        # Average over the labels present in the data, not over labels only a model invents.
        present = sorted(set(true))
        return sum(report["per_class"][label]["f1"] for label in present) / len(present)
    return float(report["accuracy"])


@dataclass(frozen=True)
class UnloadableProduction:
    """Production's artifact is missing or altered: it cannot be scored on the eval rows."""

    version: str
    problem: str
    recorded_score: float | None  # its own metrics.json on the gate's metric, when registered


def decide(
    candidate: Predictor,
    production: tuple[str, Predictor] | UnloadableProduction | None,
    evaluation: Sequence[Example],
    settings: GateSettings,
    parity_passed: bool,
) -> GateDecision:
    """Promote or reject ``candidate``. Against an unloadable production (which serves nothing:
    every container answers 503) the candidate is judged on production's recorded score, or on
    the majority baseline when none is recorded, and the reason says so: never left undecided."""
    texts = [e.text for e in evaluation]
    truth = [e.label for e in evaluation]
    if not evaluation:
        return GateDecision(
            False, "rejected: no evaluation rows to judge the candidate on", settings.metric, 0, 0, "-", 0
        )
    candidate_score = score([p.label for p in candidate.predict(texts)], truth, settings.metric)
    rows = len(evaluation)
    if not parity_passed:
        return GateDecision(
            False,
            "rejected: the int8 model failed its fp32/int8 parity check",
            settings.metric,
            candidate_score,
            0.0,
            "parity",
            rows,
        )
    unloadable = (
        f"production {production.version} cannot be loaded ({production.problem}); "
        if isinstance(production, UnloadableProduction)
        else ""
    )
    if isinstance(production, UnloadableProduction) and production.recorded_score is not None:
        reference, reference_score = production.version, production.recorded_score
        needed = reference_score - settings.tolerance
        against = f"its recorded {settings.metric} {reference_score:.4f} - tolerance {settings.tolerance:.4f}"
    elif production is None or isinstance(production, UnloadableProduction):
        majority = Counter(truth).most_common(1)[0][0]
        reference, reference_score = "majority-baseline", score([majority] * rows, truth, settings.metric)
        needed = reference_score + settings.baseline_margin
        against = f"majority baseline {reference_score:.4f} + margin {settings.baseline_margin:.4f}"
    else:
        reference, model = production
        reference_score = score([p.label for p in model.predict(texts)], truth, settings.metric)
        needed = reference_score - settings.tolerance
        against = f"production {reference} {reference_score:.4f} - tolerance {settings.tolerance:.4f}"
    passed = candidate_score >= needed
    verdict, relation = ("promoted", ">=") if passed else ("rejected", "<")
    return GateDecision(
        passed,
        f"{unloadable}{verdict}: {settings.metric} {candidate_score:.4f} {relation} {against} on {rows} eval rows",
        settings.metric,
        candidate_score,
        reference_score,
        reference,
        rows,
    )
