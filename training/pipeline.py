"""From datasets to a verified, self-describing artifact directory.

train -> export fp32 ONNX -> quantize int8 -> parity check -> metrics, report, manifest.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skiff.data.dataset import VALIDATION_SPLIT, Dataset, split_dataset
from skiff.errors import DatasetError, ParityError, Problem
from skiff.model import artifact
from skiff.model.hyperparameters import Hyperparameters
from skiff.model.metrics import classification_report, majority_baseline_accuracy
from skiff.model.predictor import MAX_BATCH_TEXTS
from training import distillation
from training.calibration import calibrated_softmax_of, calibration_report, cross_fitted_calibration_report
from training.distillation import Teacher
from training.export import batch1_latency_ms, export_onnx, onnx_probabilities, parity, quantize_int8
from training.families import LabelledTexts
from training.loop import EpochRecord, fit
from training.report import write_report

log = logging.getLogger(__name__)


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


def _probabilities(exportable: torch.nn.Module, featurizer: Any, texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        parts = [
            exportable(*(torch.from_numpy(a) for a in featurizer.encode(texts[i : i + 256]).values())).numpy()
            for i in range(0, len(texts), 256)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)


def _calibrated(
    exportable: torch.nn.Module, featurizer: Any, split: Split, hp: Hyperparameters
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to export, with its temperature when ``hp.calibration`` asks for one, and the
    calibration report for metrics.json (ECE measured on the eval split either way)."""
    exportable = exportable.eval().cpu()
    eval_probabilities = _probabilities(exportable, featurizer, split.evaluation.texts)
    if split.validation_is_held_out:
        validation_probabilities = _probabilities(exportable, featurizer, split.validation.texts)
        report = calibration_report(validation_probabilities, split.validation_y, eval_probabilities, split.eval_y)
    else:
        texts = split.evaluation.texts
        # Two halves by a hash of the text: stable across runs, independent of the split's order.
        halves = np.array([hashlib.blake2b(t.encode("utf-8"), digest_size=1).digest()[0] & 1 for t in texts])
        report = cross_fitted_calibration_report(eval_probabilities, split.eval_y, halves)
    if hp.calibration == "none":
        return exportable, {
            "method": "none",
            "ece": report["ece_before"],
            "nll": report["nll_before"],
            "bins": report["bins"],
            "measured_on": "eval split",
        }
    calibrated_softmax_of(exportable).set_temperature(report["temperature"])
    return exportable, report


@dataclass(frozen=True)
class Split:
    """The rows each role gets: training fits on ``train``, decides on ``validation`` (the
    epoch that ships, the temperature, the pruning choice) and reports on ``evaluation``."""

    train: Dataset
    validation: Dataset
    evaluation: Dataset
    labels: list[str]
    validation_is_held_out: bool
    """False when there is no validation split and the eval split stands in for it."""

    @property
    def train_y(self) -> list[int]:
        return _encode_labels(self.train, self.labels, "training")

    @property
    def validation_y(self) -> np.ndarray:
        return np.asarray(_encode_labels(self.validation, self.labels, "validation"))

    @property
    def eval_y(self) -> np.ndarray:
        return np.asarray(_encode_labels(self.evaluation, self.labels, "evaluation"))

    def describe(self) -> dict[str, Any]:
        if not self.validation_is_held_out:
            return {"kind": "eval split (no validation split)", "rows": len(self.validation)}
        return {"kind": "hashed from the training rows", "rows": len(self.validation)}


def split_roles(data: TrainingData, hp: Hyperparameters) -> Split:
    """Hold the validation split out of the training rows (``hp.validation_fraction`` of them,
    by a hash of the text, so a row keeps its role as the dataset grows); with none asked for,
    or too few rows to leave both parts non-empty, the eval split stands in (and says so)."""
    labels = sorted(set(data.train.labels))
    if hp.validation_fraction > 0:
        try:
            train, validation = split_dataset(
                data.train, hp.validation_fraction, VALIDATION_SPLIT, names=("training", "validation")
            )
        except DatasetError as exc:
            log.warning("no validation split (%s); the eval split stands in for it", exc)
        else:
            if set(train.labels) == set(labels):
                return Split(train, validation, data.evaluation, labels, validation_is_held_out=True)
            log.warning("no validation split: it would take every row of a label; the eval split stands in for it")
    return Split(data.train, data.evaluation, data.evaluation, labels, validation_is_held_out=False)


def _distillation_rows(
    teacher: Teacher, split: Split, hp: Hyperparameters, unlabeled: Sequence[str]
) -> tuple[list[str], torch.Tensor, tuple[torch.Tensor, dict[str, int]]]:
    """Texts to train on, their hard labels (the teacher's for unlabeled texts: a family's own
    bookkeeping wants one), and the loop's targets with the teacher's soft scores."""
    teacher.check_labels(split.labels)
    labelled = list(split.train.texts)
    copies = distillation.augmented(labelled, hp.distill_augment, hp.seed)
    texts = labelled + copies + list(unlabeled)
    log.info(
        "distilling from teacher %s: scoring %d training, %d augmented and %d unlabeled texts",
        teacher.version or "(a local artifact)",
        len(labelled),
        len(copies),
        len(unlabeled),
    )
    scores = teacher.scores(texts)
    y = list(split.train_y)
    hard = (
        y
        + [label for label in y for _ in range(hp.distill_augment)]
        + scores[len(labelled) + len(copies) :].argmax(1).tolist()
    )
    has_label = [True] * (len(labelled) + len(copies)) + [False] * len(unlabeled)
    targets = distillation.targets_tensor(hard, has_label, distillation.soft_targets(scores, hp.distill_temperature))
    rows = {"training": len(labelled), "augmented": len(copies), "unlabeled": len(unlabeled)}
    return texts, torch.as_tensor(hard, dtype=torch.long), (targets, rows)


def build_artifact(
    data: TrainingData,
    hp: Hyperparameters,
    model_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    lineage: dict[str, Any] | None = None,
    teacher: Teacher | None = None,
    unlabeled: Sequence[str] = (),
) -> dict[str, Any]:
    """Train, export, quantize, check parity and write the artifact; return its metrics.

    With a ``teacher``, the model is distilled from it (training/distillation.py) on the
    training rows, their augmented copies and the ``unlabeled`` texts."""
    model_dir.mkdir(parents=True, exist_ok=True)
    split = split_roles(data, hp)
    labels = split.labels
    train_y, validation_y, eval_y = split.train_y, split.validation_y, split.eval_y
    fingerprint = data.train.fingerprint()
    fp32_path, int8_path = model_dir / artifact.MODEL_FP32, model_dir / artifact.MODEL_INT8
    train_texts, hard = list(split.train.texts), torch.as_tensor(train_y, dtype=torch.long)
    distilled: tuple[torch.Tensor, dict[str, int]] | None = None
    if teacher is not None:
        train_texts, hard, distilled = _distillation_rows(teacher, split, hp, unlabeled)
    texts = LabelledTexts(
        train_texts, hard, split.validation.texts, torch.as_tensor(validation_y, dtype=torch.long), labels
    )
    family = importlib.import_module(f"training.families.{hp.model_family}").prepare(texts, hp, model_dir)
    if distilled is not None:
        family = replace(
            family,
            task=replace(
                family.task,
                train_targets=distilled[0],
                loss=distillation.distillation_loss(hp.distill_temperature, hp.distill_weight),
            ),
        )
    result = fit(
        family.task,
        hp,
        labels,
        dataset_fingerprint=fingerprint,
        checkpoint_dir=checkpoint_dir,
        device=device,
        on_epoch_end=on_epoch_end,
        keep_best=split.validation_is_held_out,  # never choose an epoch on what is reported
    )
    if not result.is_writer:
        return {}  # DDP: ranks other than 0 only help train; rank 0 exports and writes
    shipped = family.ship(result.model)
    featurizer = shipped.featurizer
    exportable, calibration = _calibrated(shipped.exportable, featurizer, split, hp)
    export_onnx(exportable, fp32_path, featurizer.encode(data.evaluation.texts[:2]), family.onnx_exporter)
    # Parity then compares int8 with the fused fp32 graph, the one it was quantized from.
    fused = family.fuse_graph(fp32_path) if family.fuse_graph is not None else {}
    calibration_texts = split.train.texts[: family.quantization.calibration_texts]
    quantize_int8(fp32_path, int8_path, family.quantization, (featurizer.encode([t]) for t in calibration_texts))
    fp32_scores = onnx_probabilities(fp32_path, featurizer, data.evaluation.texts)
    # Serving runs the int8 model on one text and on up to MAX_BATCH_TEXTS at once; both must agree with fp32.
    int8_by_batch = {
        batch: onnx_probabilities(int8_path, featurizer, data.evaluation.texts, batch_size=batch)
        for batch in (1, MAX_BATCH_TEXTS)
    }
    int8_scores = int8_by_batch[MAX_BATCH_TEXTS]
    parity_report = {**parity(fp32_scores, int8_by_batch, eval_y), "min_label_agreement": hp.min_parity_agreement}
    parity_report["passed"] = parity_report["label_agreement"] >= hp.min_parity_agreement

    int8_report = classification_report(eval_y, int8_scores.argmax(1), labels)
    sizes = {artifact.MODEL_FP32: fp32_path.stat().st_size, artifact.MODEL_INT8: int8_path.stat().st_size}
    # What a Lambda downloads and holds: the int8 model and the files its featurizer reads.
    sizes["served"] = sizes[artifact.MODEL_INT8] + sum((model_dir / f).stat().st_size for f in shipped.featurizer_files)
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
        "quantization": family.quantization.to_dict(),
        "onnx_exporter": family.onnx_exporter,
        "fused_operators": fused,
        "compression": shipped.compression,
        "calibration": calibration,
        "latency": batch1_latency_ms(int8_path, featurizer, data.evaluation.texts),
        "sizes": {**sizes, "int8_over_fp32": sizes[artifact.MODEL_INT8] / sizes[artifact.MODEL_FP32]},
        "validation": split.describe(),
        "distillation": (
            distillation.describe(
                teacher, hp, distilled[1], distillation.agreement(int8_scores, teacher.scores(data.evaluation.texts))
            )
            if teacher is not None and distilled is not None
            else None
        ),
        "training": {
            "rows": len(split.train),
            "label_counts": split.train.label_counts(),
            "epochs": hp.epochs,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "seconds": result.train_seconds,
            "featurize_seconds": family.featurize_seconds,
            "batch_size": result.batch_size,
            "learning_rate": result.learning_rate,
            "lr_schedule": result.schedule,
            "class_weights": dict(zip(labels, result.class_weights, strict=True)) if result.class_weights else None,
            "threads": result.threads,
            "padding_share": result.padding_share,
            "world_size": result.world_size,
            "samples_per_second": result.samples_per_second,
            "resumed_from_epoch": result.resumed_from_epoch,
            "device": result.device,
            "precision": result.precision,
            "history": [vars(r) for r in result.history],
        },
    }
    artifact.write_json(model_dir / artifact.METRICS, metrics)
    if not parity_report["passed"]:
        # Fail loudly: an int8 model that disagrees with its fp32 source must never be registered.
        raise ParityError(
            f"expected int8/fp32 label agreement >= {hp.min_parity_agreement:.4f} "
            f"(got: {parity_report['label_agreement']:.4f} on {parity_report['rows']} eval rows)"
        )
    artifact.write_json(model_dir / artifact.PREPROCESSING, featurizer.to_spec())
    artifact.write_json(model_dir / artifact.LABELS, labels)
    write_report(
        model_dir / artifact.REPORT,
        result.history,
        int8_report["confusion_matrix"],
        labels,
        f"{hp.model_family} model: int8 eval accuracy {int8_report['accuracy']:.4f}, "
        f"macro-F1 {int8_report['macro_f1']:.4f}, ECE {calibration['ece']:.4f}",
    )
    artifact.write_manifest(
        model_dir,
        {
            "model_family": hp.model_family,
            "serving_model": artifact.MODEL_INT8,
            "featurizer_files": list(shipped.featurizer_files),
            "hyperparameters": hp.to_dict(),
            "dataset": {
                "fingerprint": fingerprint,
                "train_rows": len(split.train),
                "validation_rows": len(split.validation) if split.validation_is_held_out else 0,
                "eval_rows": len(data.evaluation),
                "eval_kind": data.evaluation_kind,
                "labels": labels,
            },
            "lineage": {
                **(lineage or {}),
                **({"teacher": {"version": teacher.version, "model_family": teacher.model_family}} if teacher else {}),
            },
        },
    )
    log.info("artifact written to %s: %s", model_dir, json.dumps({"accuracy": int8_report["accuracy"]}))
    return metrics
