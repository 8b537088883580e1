from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skiff.data import read_csv
from skiff.errors import TrainingError
from skiff.features import HashedNgramFeaturizer
from skiff.hyperparameters import Hyperparameters
from tests.conftest import SMALL_HYPERPARAMETERS
from training.loop import CHECKPOINT_PREFIX, FitResult, fit


class Interrupted(Exception):
    """Stands in for a reclaimed spot instance."""


def _fit(demo_csv: Path, hp: Hyperparameters, checkpoint_dir: Path | None, stop_after: int | None = None) -> FitResult:
    dataset = read_csv(demo_csv)
    labels = sorted(set(dataset.labels))
    ids = [HashedNgramFeaturizer(hp.preprocessing()).ids(t) for t in dataset.texts]
    y = [labels.index(label) for label in dataset.labels]

    def on_epoch_end(record: object) -> None:
        if stop_after is not None and record.epoch == stop_after:  # type: ignore[attr-defined]
            raise Interrupted

    return fit(
        ids,
        y,
        ids[:50],
        y[:50],
        labels,
        hp,
        dataset_fingerprint=dataset.fingerprint(),
        checkpoint_dir=checkpoint_dir,
        device=torch.device("cpu"),
        on_epoch_end=on_epoch_end,
    )


def test_interrupted_then_resumed_run_ends_with_identical_weights(demo_csv: Path, tmp_path: Path) -> None:
    uninterrupted = _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path / "a")
    with pytest.raises(Interrupted):
        _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path / "b", stop_after=1)
    resumed = _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path / "b")
    assert resumed.resumed_from_epoch == 1
    expected, actual = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    assert [r.loss for r in resumed.history] == [r.loss for r in uninterrupted.history]


def test_a_checkpoint_is_written_each_epoch_and_only_the_newest_are_kept(demo_csv: Path, tmp_path: Path) -> None:
    _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{CHECKPOINT_PREFIX}0002.pt", f"{CHECKPOINT_PREFIX}0003.pt"]


def test_completed_checkpoint_is_not_retrained(demo_csv: Path, tmp_path: Path) -> None:
    _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path)
    again = _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path)
    assert again.resumed_from_epoch == SMALL_HYPERPARAMETERS.epochs and again.samples_seen == 0


def test_checkpoint_from_other_hyperparameters_is_refused(demo_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        _fit(demo_csv, SMALL_HYPERPARAMETERS, tmp_path, stop_after=1)
    other = Hyperparameters(**{**SMALL_HYPERPARAMETERS.to_dict(), "learning_rate": 0.5})
    with pytest.raises(TrainingError, match=r"expected checkpoints in .* from this dataset and these hyperparameters"):
        _fit(demo_csv, other, tmp_path)


def test_training_is_deterministic_on_cpu(demo_csv: Path) -> None:
    first = _fit(demo_csv, SMALL_HYPERPARAMETERS, None).model.state_dict()
    second = _fit(demo_csv, SMALL_HYPERPARAMETERS, None).model.state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
