"""From datasets to a verified, self-describing artifact directory.

train -> export fp32 ONNX -> quantize int8 -> parity check -> metrics, report, manifest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skiff.artifact import LABELS, METRICS, MODEL_FP32, MODEL_INT8, PREPROCESSING, REPORT, write_json, write_manifest
from skiff.data import Dataset
from skiff.errors import DatasetError, ParityError, Problem
from skiff.features import Featurizer, HashedNgramFeaturizer
from skiff.hyperparameters import Hyperparameters
from skiff.metrics import classification_report, majority_baseline_accuracy
from training.export import QuantizationSettings, export_onnx, onnx_probabilities, parity, quantize_int8
from training.loop import EpochRecord, FitResult, fit
from training.model import WithProbabilities
from training.report import write_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """What a model family's training hands the shared export/quantize/parity/write steps."""

    result: FitResult
    featurizer: Featurizer
    featurize_seconds: float
    featurizer_files: tuple[str, ...] = ()
    is_writer: bool = True


def _train_and_export_bag(
    data: TrainingData,
    train_y: list[int],
    eval_y: np.ndarray,
    labels: list[str],
    hp: Hyperparameters,
    fp32_path: Path,
    **common: Any,
) -> Trained:
    featurizer = HashedNgramFeaturizer(hp.preprocessing())
    began = time.perf_counter()
    train_ids = [featurizer.ids(t) for t in data.train.texts]
    eval_ids = [featurizer.ids(t) for t in data.evaluation.texts]
    featurize_seconds = time.perf_counter() - began
    result = fit(train_ids, train_y, eval_ids, eval_y.tolist(), labels, hp, **common)
    export_onnx(WithProbabilities(result.model), fp32_path, featurizer.encode(data.evaluation.texts[:2]))
    return Trained(result, featurizer, featurize_seconds)


@dataclass(frozen=True)
class TrainingData:
    train: Dataset
    evaluation: Dataset
    evaluation_kind: str  # "test-channel" or "hashed-split"


def _encode_labels(dataset: Dataset, labels: list[str], role: str) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({label for label in dataset.labels if label not in index})
    if unknown:
        raise DatasetError(
            dataset.source, [Problem(f"expected {role} labels among the training labels {labels} (got: {unknown})")]
        )
    return [index[label] for label in dataset.labels]


def build_artifact(
    data: TrainingData,
    hp: Hyperparameters,
    model_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    device: torch.device | None = None,
    quantization: QuantizationSettings = QuantizationSettings(),
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, export, quantize, check parity and write the artifact; return its metrics."""
    model_dir.mkdir(parents=True, exist_ok=True)
    labels = sorted(set(data.train.labels))
    train_y = _encode_labels(data.train, labels, "training")
    eval_y = np.asarray(_encode_labels(data.evaluation, labels, "evaluation"))
    fingerprint = data.train.fingerprint()
    fp32_path, int8_path = model_dir / MODEL_FP32, model_dir / MODEL_INT8
    common = {
        "dataset_fingerprint": fingerprint,
        "checkpoint_dir": checkpoint_dir,
        "device": device,
        "on_epoch_end": on_epoch_end,
    }
    if hp.model_family == "transformer":
        from training import transformer

        trained = transformer.train_and_export(data, train_y, eval_y, labels, hp, model_dir, fp32_path, **common)
        quantization = QuantizationSettings(per_channel=True)  # per-channel keeps encoder weights accurate
    else:
        trained = _train_and_export_bag(data, train_y, eval_y, labels, hp, fp32_path, **common)
    if not trained.is_writer:
        return {}  # DDP: ranks other than 0 only help train; rank 0 exports and writes
    result, featurizer = trained.result, trained.featurizer
    featurize_seconds = trained.featurize_seconds
    quantize_int8(fp32_path, int8_path, quantization)
    fp32_scores = onnx_probabilities(fp32_path, featurizer, data.evaluation.texts)
    int8_scores = onnx_probabilities(int8_path, featurizer, data.evaluation.texts)
    parity_report = {**parity(fp32_scores, int8_scores, eval_y), "min_label_agreement": hp.min_parity_agreement}
    parity_report["passed"] = parity_report["label_agreement"] >= hp.min_parity_agreement

    int8_report = classification_report(eval_y, int8_scores.argmax(1), labels)
    sizes = {MODEL_FP32: fp32_path.stat().st_size, MODEL_INT8: int8_path.stat().st_size}
    metrics: dict[str, Any] = {
        "model_family": hp.model_family,
        "eval": {
            "kind": data.evaluation_kind,
            "rows": len(data.evaluation),
            "majority_baseline_accuracy": majority_baseline_accuracy(eval_y),
            "int8": int8_report,
            "fp32": classification_report(eval_y, fp32_scores.argmax(1), labels),
        },
        "parity": parity_report,
        "quantization": quantization.to_dict(),
        "sizes": {**sizes, "int8_over_fp32": sizes[MODEL_INT8] / sizes[MODEL_FP32]},
        "training": {
            "rows": len(data.train),
            "label_counts": data.train.label_counts(),
            "epochs": hp.epochs,
            "seconds": result.train_seconds,
            "featurize_seconds": featurize_seconds,
            "world_size": result.world_size,
            "samples_per_second": result.samples_per_second,
            "resumed_from_epoch": result.resumed_from_epoch,
            "device": result.device,
            "precision": result.precision,
            "history": [vars(r) for r in result.history],
        },
    }
    write_json(model_dir / METRICS, metrics)
    if not parity_report["passed"]:
        # Fail loudly: an int8 model that disagrees with its fp32 source must never be registered.
        raise ParityError(
            f"expected int8/fp32 label agreement >= {hp.min_parity_agreement:.4f} "
            f"(got: {parity_report['label_agreement']:.4f} on {parity_report['rows']} eval rows)"
        )
    write_json(model_dir / PREPROCESSING, featurizer.to_spec())
    write_json(model_dir / LABELS, labels)
    write_report(
        model_dir / REPORT,
        result.history,
        int8_report["confusion_matrix"],
        labels,
        f"{hp.model_family} model: int8 eval accuracy {int8_report['accuracy']:.4f}, "
        f"macro-F1 {int8_report['macro_f1']:.4f}",
    )
    write_manifest(
        model_dir,
        {
            "model_family": hp.model_family,
            "serving_model": MODEL_INT8,
            "featurizer_files": list(trained.featurizer_files),
            "hyperparameters": hp.to_dict(),
            "dataset": {
                "fingerprint": fingerprint,
                "train_rows": len(data.train),
                "eval_rows": len(data.evaluation),
                "eval_kind": data.evaluation_kind,
                "labels": labels,
            },
            "lineage": lineage or {},
        },
    )
    log.info("artifact written to %s: %s", model_dir, json.dumps({"accuracy": int8_report["accuracy"]}))
    return metrics
