"""The one training loop, run for both model families: resume, determinism, checkpoints, DDP."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from skiff.data.dataset import read_csv
from skiff.errors import ConfigError, TrainingError
from skiff.model.hyperparameters import Hyperparameters
from tests.conftest import SMALL_HYPERPARAMETERS
from tests.training.conftest import run_job
from training.families import LabelledTexts
from training.loop import CHECKPOINT_PREFIX, FitResult, fit

FAMILIES = ("bag", "transformer")


class Interrupted(Exception):
    """Stands in for a reclaimed spot instance."""


def _hyperparameters(family: str, tiny_base: Path, **changes: object) -> Hyperparameters:
    if family == "bag":
        return Hyperparameters(**{**SMALL_HYPERPARAMETERS.to_dict(), **changes})
    tiny = {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "max_length": 32, "base_model": str(tiny_base)}
    return Hyperparameters(model_family="transformer", **{**tiny, **changes})


@pytest.fixture(scope="module")
def texts(small_sms: tuple[Path, Path]) -> LabelledTexts:
    rows = read_csv(small_sms[0]).examples[:96]
    targets = torch.as_tensor([int(e.label == "spam") for e in rows])
    return LabelledTexts([e.text for e in rows], targets, [e.text for e in rows[:32]], targets[:32], ["ham", "spam"])


def _fit(
    family: str,
    texts: LabelledTexts,
    hp: Hyperparameters,
    checkpoints: Path | None,
    tmp_path: Path,
    stop_after: int | None = None,
    keep_best: bool = True,
) -> FitResult:
    import importlib

    prepared = importlib.import_module(f"training.families.{family}").prepare(texts, hp, tmp_path / "artifact")

    def on_epoch_end(record: object) -> None:
        if stop_after is not None and record.epoch == stop_after:  # type: ignore[attr-defined]
            raise Interrupted

    return fit(
        prepared.task,
        hp,
        texts.labels,
        dataset_fingerprint="fingerprint",
        checkpoint_dir=checkpoints,
        device=torch.device("cpu"),
        on_epoch_end=on_epoch_end,
        keep_best=keep_best,
    )


def _same_weights(first: FitResult, second: FitResult) -> bool:
    a, b = first.model.state_dict(), second.model.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("family", FAMILIES)
def test_interrupted_then_resumed_run_ends_with_identical_weights(
    family: str, texts: LabelledTexts, tiny_base: Path, tmp_path: Path
) -> None:
    hp = _hyperparameters(family, tiny_base)
    straight = _fit(family, texts, hp, tmp_path / "a", tmp_path)
    with pytest.raises(Interrupted):
        _fit(family, texts, hp, tmp_path / "b", tmp_path, stop_after=1)
    resumed = _fit(family, texts, hp, tmp_path / "b", tmp_path)
    assert resumed.resumed_from_epoch == 1
    assert _same_weights(straight, resumed)
    assert [r.loss for r in resumed.history] == [r.loss for r in straight.history]


@pytest.mark.parametrize("family", FAMILIES)
def test_training_is_deterministic_on_cpu(family: str, texts: LabelledTexts, tiny_base: Path, tmp_path: Path) -> None:
    hp = _hyperparameters(family, tiny_base)
    assert _same_weights(_fit(family, texts, hp, None, tmp_path), _fit(family, texts, hp, None, tmp_path))


def test_a_checkpoint_is_written_each_epoch_and_only_the_newest_are_kept(
    texts: LabelledTexts, tiny_base: Path, tmp_path: Path
) -> None:
    _fit("bag", texts, _hyperparameters("bag", tiny_base), tmp_path / "ckpt", tmp_path)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        f"{CHECKPOINT_PREFIX}0002.pt",
        f"{CHECKPOINT_PREFIX}0003.pt",
    ]


def test_completed_checkpoint_is_not_retrained(texts: LabelledTexts, tiny_base: Path, tmp_path: Path) -> None:
    hp = _hyperparameters("bag", tiny_base)
    _fit("bag", texts, hp, tmp_path / "ckpt", tmp_path)
    again = _fit("bag", texts, hp, tmp_path / "ckpt", tmp_path)
    assert again.resumed_from_epoch == hp.epochs and again.samples_seen == 0


def test_checkpoint_from_other_hyperparameters_is_refused(
    texts: LabelledTexts, tiny_base: Path, tmp_path: Path
) -> None:
    with pytest.raises(Interrupted):
        _fit("bag", texts, _hyperparameters("bag", tiny_base), tmp_path / "ckpt", tmp_path, stop_after=1)
    other = _hyperparameters("bag", tiny_base, learning_rate=0.5)
    with pytest.raises(TrainingError, match=r"expected checkpoints in .* from this dataset and these hyperparameters"):
        _fit("bag", texts, other, tmp_path / "ckpt", tmp_path)


@pytest.fixture(scope="module")
def misleading(texts: LabelledTexts) -> LabelledTexts:
    """Validation rows labelled the wrong way round: the better the model learns, the worse it
    scores on them, so an early epoch is the best and later ones never beat it."""
    return replace(texts, validation_targets=1 - texts.validation_targets)


def _best(result: FitResult) -> int:
    return max(result.history, key=lambda r: (r.validation_accuracy, -r.validation_loss)).epoch


def test_the_best_epoch_on_the_validation_rows_ships(misleading: LabelledTexts, tmp_path: Path) -> None:
    hp = replace(SMALL_HYPERPARAMETERS, epochs=6, early_stopping_patience=0)
    result = _fit("bag", misleading, hp, None, tmp_path)
    best = _best(result)
    assert len(result.history) == 6 and result.best_epoch == best < 6 and not result.stopped_early
    assert _same_weights(result, _fit("bag", misleading, replace(hp, epochs=best), None, tmp_path))


def test_training_stops_after_patience_epochs_without_a_better_one(misleading: LabelledTexts, tmp_path: Path) -> None:
    hp = replace(SMALL_HYPERPARAMETERS, epochs=20, early_stopping_patience=2)
    result = _fit("bag", misleading, hp, None, tmp_path)
    assert result.stopped_early and len(result.history) == result.best_epoch + 2 < 20
    assert _best(result) == result.best_epoch


def test_without_keep_best_every_epoch_runs_and_the_last_ships(misleading: LabelledTexts, tmp_path: Path) -> None:
    hp = replace(SMALL_HYPERPARAMETERS, epochs=6, early_stopping_patience=2)
    result = _fit("bag", misleading, hp, None, tmp_path, keep_best=False)
    assert len(result.history) == 6 and result.best_epoch == 6 and not result.stopped_early
    assert _same_weights(result, _fit("bag", misleading, replace(hp, epochs=6), None, tmp_path, keep_best=False))


def test_a_run_resumed_after_it_stopped_early_trains_no_more_and_ships_the_best_epoch(
    misleading: LabelledTexts, tmp_path: Path
) -> None:
    hp = replace(SMALL_HYPERPARAMETERS, epochs=20, early_stopping_patience=2)
    first = _fit("bag", misleading, hp, tmp_path / "ckpt", tmp_path)
    again = _fit("bag", misleading, hp, tmp_path / "ckpt", tmp_path)
    assert first.stopped_early and again.samples_seen == 0 and again.best_epoch == first.best_epoch
    assert _same_weights(first, again)


def test_a_run_interrupted_after_its_best_epoch_resumes_to_the_same_weights(
    misleading: LabelledTexts, tmp_path: Path
) -> None:
    hp = replace(SMALL_HYPERPARAMETERS, epochs=6, early_stopping_patience=0)
    straight = _fit("bag", misleading, hp, None, tmp_path)
    with pytest.raises(Interrupted):
        _fit("bag", misleading, hp, tmp_path / "ckpt", tmp_path, stop_after=straight.best_epoch + 1)
    resumed = _fit("bag", misleading, hp, tmp_path / "ckpt", tmp_path)
    assert resumed.resumed_from_epoch == straight.best_epoch + 1 and resumed.best_epoch == straight.best_epoch
    assert _same_weights(straight, resumed)


def test_fewer_rows_than_one_batch_is_refused(texts: LabelledTexts, tiny_base: Path, tmp_path: Path) -> None:
    hp = _hyperparameters("bag", tiny_base, batch_size=200)
    with pytest.raises(ConfigError, match=r"expected at least batch_size=200 training rows \(got: 96\)"):
        _fit("bag", texts, hp, None, tmp_path)


def test_the_result_states_batch_learning_rate_and_padding(
    texts: LabelledTexts, tiny_base: Path, tmp_path: Path
) -> None:
    result = _fit("transformer", texts, _hyperparameters("transformer", tiny_base), None, tmp_path)
    assert (result.batch_size, result.learning_rate) == (16, 1e-3)
    assert 0.0 <= result.padding_share < 0.5
    assert result.samples_seen == 2 * 96  # 2 epochs × 6 full batches of 16


@pytest.mark.parametrize("family", FAMILIES)
def test_two_processes_match_one_with_the_same_global_batch(
    family: str, tmp_path: Path, small_sms: tuple[Path, Path], tiny_base: Path
) -> None:
    """DDP over gloo, 2 ranks × 8 rows vs 1 rank × 16 rows: same weights within 1e-4.

    Without dropout: its masks depend on how many rows a process draws them for."""
    hp = _hyperparameters(family, tiny_base, epochs=1, batch_size=16, dropout=0.0).to_strings()
    hp["min_parity_agreement"] = "0.9"
    one = run_job(tmp_path, *small_sms, hp, ranks=1)
    two = run_job(tmp_path, *small_sms, hp, ranks=2)
    first = torch.load(sorted((tmp_path / "ckpt-1").glob("*.pt"))[-1], weights_only=False)["model"]
    second = torch.load(sorted((tmp_path / "ckpt-2").glob("*.pt"))[-1], weights_only=False)["model"]
    worst = max(float((first[k].to_dense() - second[k].to_dense()).abs().max()) for k in first)
    assert worst < 1e-4, worst
    assert json.loads((two / "metrics.json").read_text())["training"]["world_size"] == 2
    assert json.loads((one / "metrics.json").read_text())["training"]["world_size"] == 1
