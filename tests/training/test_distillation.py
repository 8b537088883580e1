"""Distillation: a student learns a teacher's softened scores beside the labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from skiff.data.dataset import Dataset, Example, read_csv, split_dataset
from skiff.errors import ArtifactError, ConfigError, DatasetError
from skiff.model.artifact import load_artifact
from tests.conftest import SMALL_HYPERPARAMETERS
from training.distillation import (
    Teacher,
    augmented,
    distillation_loss,
    read_texts,
    soft_targets,
    targets_tensor,
)
from training.pipeline import TrainingData, build_artifact


def test_with_weight_0_the_loss_is_the_cross_entropy_of_the_labelled_rows() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [0.0, 3.0]])
    targets = targets_tensor([0, 1, 1], [True, True, False], np.full((3, 2), 0.5))
    expected = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 1]), reduction="sum") / 3
    assert distillation_loss(2.0, 0.0)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_with_weight_1_the_loss_is_t_squared_times_the_cross_entropy_to_the_soft_targets() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    soft = np.array([[0.9, 0.1], [0.2, 0.8]])
    targets = targets_tensor([1, 0], [True, False], soft)  # the labels disagree: weight 1 ignores them
    student = torch.log_softmax(logits / 3.0, dim=1)
    expected = -(torch.as_tensor(soft, dtype=torch.float32) * student).sum(1).mean() * 9.0
    assert distillation_loss(3.0, 1.0)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_an_unlabeled_row_pulls_only_towards_the_teacher() -> None:
    logits = torch.zeros(1, 2, requires_grad=True)
    targets = targets_tensor([0], [False], np.array([[0.2, 0.8]]))
    distillation_loss(2.0, 0.5)(logits, targets).backward()
    assert logits.grad[0, 1] < 0 < logits.grad[0, 0]  # label 0 would pull the other way


def test_soft_targets_at_t_1_are_the_teachers_scores_and_higher_t_flattens_them() -> None:
    scores = np.array([[0.9, 0.1], [0.3, 0.7]])
    assert np.allclose(soft_targets(scores, 1.0), scores)
    softened = soft_targets(scores, 4.0)
    assert np.allclose(softened.sum(1), 1.0) and softened[0, 0] < 0.9 and softened[0].argmax() == 0


def test_augmented_copies_are_seeded_word_dropped_and_never_empty() -> None:
    texts = ["win a free prize now by texting WIN to 80086", "ok"]
    first, again = augmented(texts, 3, seed=7), augmented(texts, 3, seed=7)
    assert first == again and len(first) == 6
    assert all(copy.strip() for copy in first) and first[3:] == ["ok", "ok", "ok"]
    assert any(copy != texts[0] for copy in first[:3])
    assert all(set(copy.split()) <= set(texts[0].split()) for copy in first[:3])


def test_unlabeled_texts_are_read_from_the_text_column_of_every_csv(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("text,label\nfirst,ham\n,ham\n")
    (tmp_path / "b.csv").write_text("id,text\n1,second\n")
    assert read_texts(tmp_path) == ["first", "second"]


def test_unlabeled_csv_without_a_text_column_is_refused_naming_its_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("message\nhello\n")
    with pytest.raises(DatasetError, match=r"expected a 'text' column \(got: \['message'\]\)"):
        read_texts(tmp_path)


@pytest.fixture(scope="module")
def student(small_artifact: Path, demo_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo bag model distilled from the demo bag model (a stand-in teacher: any artifact
    teaches the same way), with augmented copies and unlabeled texts."""
    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    teacher = Teacher.load(small_artifact, "v-teacher")
    hp = SMALL_HYPERPARAMETERS.with_changes(teacher_version="v-teacher", distill_augment=1)
    assert hp.class_weighting == "none"  # what a job's hyperparameters with a teacher resolve to
    model_dir = tmp_path_factory.mktemp("student") / "model"
    unlabeled = ["where is my parcel", "my card was charged twice", "the app keeps crashing"]
    metrics = build_artifact(
        TrainingData(train, evaluation, "hashed-split"), hp, model_dir, teacher=teacher, unlabeled=unlabeled
    )
    return model_dir, metrics


def test_the_student_records_its_teacher_and_what_it_was_taught_on(student: tuple[Path, dict]) -> None:
    _, metrics = student
    distilled = metrics["distillation"]
    assert distilled["teacher"] == {"version": "v-teacher", "model_family": "bag"}
    assert (distilled["temperature"], distilled["weight"]) == (2.0, 0.5)
    rows = distilled["rows"]
    assert rows["augmented"] == rows["training"] == metrics["training"]["rows"] and rows["unlabeled"] == 3
    assert 0.9 <= distilled["eval_agreement_with_teacher"] <= 1.0


def test_the_students_lineage_names_the_teacher(student: tuple[Path, dict]) -> None:
    model_dir, _ = student
    manifest = load_artifact(model_dir).manifest
    assert manifest["lineage"]["teacher"] == {"version": "v-teacher", "model_family": "bag"}
    assert manifest["hyperparameters"]["teacher_version"] == "v-teacher"


def test_the_student_learns_the_task(student: tuple[Path, dict]) -> None:
    _, metrics = student
    assert metrics["eval"]["int8"]["accuracy"] >= 0.9


def test_a_model_trained_without_a_teacher_records_no_distillation(small_artifact: Path) -> None:
    metrics = json.loads((small_artifact / "metrics.json").read_text())
    assert metrics["distillation"] is None
    assert "teacher" not in load_artifact(small_artifact).manifest["lineage"]


def test_a_teacher_with_other_labels_is_refused_naming_both(small_artifact: Path, tmp_path: Path) -> None:
    teacher = Teacher.load(small_artifact)
    rows = tuple(Example(f"text number {i}", "ham" if i % 2 else "spam") for i in range(80))
    data = Dataset(rows, "two-labels.csv")
    train, evaluation = split_dataset(data, 0.2)
    with pytest.raises(ConfigError, match=r"expected the teacher to have the training data's labels \['ham', 'spam'\]"):
        build_artifact(
            TrainingData(train, evaluation, "hashed-split"), SMALL_HYPERPARAMETERS, tmp_path, teacher=teacher
        )


def test_a_tampered_teacher_is_refused(small_artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "teacher"
    shutil.copytree(small_artifact, copy)
    with (copy / "labels.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError, match="labels.json"):
        Teacher.load(copy)
