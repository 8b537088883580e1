"""Knowledge distillation: the student learns from a teacher's scores as well as the labels.

The teacher is any Skiff artifact (typically a fine-tuned transformer from the registry, handed
to the job as its ``teacher`` channel). The job scores texts with the teacher's served int8
ONNX model through onnxruntime, exactly as serving would, so no teacher code, torch or
tokenizer settings are needed beyond what the artifact itself carries.

What the student trains on: the training rows (their label and the teacher's scores),
``distill_augment`` copies of each with words dropped and swapped (the source row's label and
the teacher's scores of the *copy*), and the texts of an optional ``unlabeled`` channel (the
teacher's scores only). The loss per row is

    weight · T² · CE(softmax(teacher logits / T), softmax(student logits / T))
    + (1 − weight) · CE(label, student logits)          (rows with a label)

Hinton et al. (2015): T² keeps the soft term's gradients on the scale of the hard one's as T
changes. The teacher's served scores are already softmax(z / T_cal); their logarithm is z / T_cal
up to a per-row constant, which softmax ignores, so softening them by T needs nothing else.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skiff.errors import ConfigError, DatasetError, Problem
from skiff.model.artifact import load_artifact
from skiff.model.predictor import MAX_BATCH_TEXTS, Predictor

WORD_DROPOUT = 0.1
"""Each word of an augmented copy is dropped with this probability (never all of them)."""


@dataclass(frozen=True)
class Teacher:
    predictor: Predictor
    version: str
    model_family: str

    @classmethod
    def load(cls, directory: Path, version: str = "") -> Teacher:
        """The artifact in ``directory`` (checksums verified), served as serving would."""
        artifact = load_artifact(directory)
        model_file = artifact.manifest.get("serving_model", "model.int8.onnx")
        return cls(Predictor(artifact, model_file, threads=None), version, artifact.manifest.get("model_family", ""))

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.labels)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """The teacher's served probabilities, [len(texts), labels], in batches /predict accepts."""
        parts = [
            self.predictor.probabilities(texts[i : i + MAX_BATCH_TEXTS]) for i in range(0, len(texts), MAX_BATCH_TEXTS)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), dtype=np.float32)

    def check_labels(self, labels: Sequence[str]) -> None:
        if list(labels) != self.labels:
            raise ConfigError(
                f"expected the teacher to have the training data's labels {list(labels)} (got: {self.labels})"
            )


def augmented(texts: Sequence[str], copies: int, seed: int) -> list[str]:
    """``copies`` variants of every text (all of the first text's, then the second's...): each
    drops words with probability WORD_DROPOUT and swaps one random pair of neighbours, seeded,
    so a resumed job builds exactly the same rows."""
    rng = random.Random(seed)
    out: list[str] = []
    for text in texts:
        words = text.split()
        for _ in range(copies):
            kept = [w for w in words if rng.random() >= WORD_DROPOUT] or words[:1]
            if len(kept) > 1:
                i = rng.randrange(len(kept) - 1)
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
            out.append(" ".join(kept))
    return out


def read_texts(path: Path) -> list[str]:
    """The ``text`` column of every CSV under ``path`` (a file or a channel directory); other
    columns, a label included, are ignored."""
    files = sorted(p for p in path.rglob("*.csv") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DatasetError(str(path), [Problem("expected at least one .csv file of texts (got: none)")])
    texts: list[str] = []
    for file in files:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if "text" not in (reader.fieldnames or []):
                raise DatasetError(str(file), [Problem(f"expected a 'text' column (got: {reader.fieldnames})", 1)])
            texts.extend(row["text"] for row in reader if (row.get("text") or "").strip())
    return texts


def soft_targets(teacher_probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the teacher's scores softened by ``temperature``."""
    z = np.log(np.clip(teacher_probabilities.astype(np.float64), 1e-12, 1.0)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def targets_tensor(hard: Sequence[int], labelled: Sequence[bool], soft: np.ndarray) -> torch.Tensor:
    """One row per text: [hard label, 1 if it has a label, soft target per label...]. The loop
    indexes targets by row, so soft targets travel as extra columns."""
    return torch.cat(
        [
            torch.as_tensor(hard, dtype=torch.float32)[:, None],
            torch.as_tensor(labelled, dtype=torch.float32)[:, None],
            torch.as_tensor(soft, dtype=torch.float32),
        ],
        dim=1,
    )


def distillation_loss(temperature: float, weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(student logits, targets_tensor rows) -> the mean loss of the module docstring."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        hard, labelled, soft = targets[:, 0].long(), targets[:, 1], targets[:, 2:]
        soft_term = -(soft * torch.log_softmax(logits / temperature, dim=1)).sum(1) * temperature**2
        hard_term = nn.functional.cross_entropy(logits, hard, reduction="none") * labelled
        return (weight * soft_term + (1.0 - weight) * hard_term).mean()

    return loss


def agreement(student: np.ndarray, teacher: np.ndarray) -> float:
    """The share of rows where student and teacher pick the same label."""
    return float((student.argmax(1) == teacher.argmax(1)).mean()) if len(student) else 1.0


def describe(teacher: Teacher, hp: Any, rows: dict[str, int], eval_agreement: float) -> dict[str, Any]:
    return {
        "teacher": {"version": teacher.version, "model_family": teacher.model_family},
        "temperature": hp.distill_temperature,
        "weight": hp.distill_weight,
        "rows": rows,
        "eval_agreement_with_teacher": eval_agreement,
    }
