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
from training.loop import (
    CHECKPOINT_PREFIX,
    FitResult,
    balanced_class_weights,
    fit,
    learning_rate_factor,
    weighted_cross_entropy,
)

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
    rates: list[float] | None = None,
) -> FitResult:
    """``rates``, when given, receives the first parameter group's learning rate at every optimizer step."""
    import importlib

    prepared = importlib.import_module(f"training.families.{family}").prepare(texts, hp, tmp_path / "artifact")
    task = prepared.task
    if rates is not None:

        def build_optimizers(*args: object) -> list[torch.optim.Optimizer]:
            optimizers = prepared.task.build_optimizers(*args)  # type: ignore[arg-type]
            optimizers[0].register_step_pre_hook(lambda opt, *_: rates.append(opt.param_groups[0]["lr"]))
            return optimizers

        task = replace(task, build_optimizers=build_optimizers)

    def on_epoch_end(record: object) -> None:
        if stop_after is not None and record.epoch == stop_after:  # type: ignore[attr-defined]
            raise Interrupted

    return fit(
        task,
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


def test_warm_up_rises_linearly_from_the_first_step() -> None:
    assert [learning_rate_factor(step, 100, 4, "linear") for step in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_linear_decay_reaches_zero_after_the_last_step() -> None:
    factors = [learning_rate_factor(step, 10, 0, "linear") for step in range(10)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))


def test_cosine_decay_is_half_way_at_the_middle() -> None:
    assert learning_rate_factor(7, 12, 2, "cosine") == pytest.approx(0.5)


def test_a_constant_schedule_keeps_the_rate_after_warm_up() -> None:
    assert [learning_rate_factor(step, 10, 2, "constant") for step in (0, 2, 9)] == [0.5, 1.0, 1.0]


def test_the_loop_sets_each_step_s_rate_from_the_schedule(
    texts: LabelledTexts, tiny_base: Path, tmp_path: Path
) -> None:
    hp = _hyperparameters(
        "bag", tiny_base, batch_size=32, learning_rate=1.0, warmup_fraction=0.25, lr_schedule="linear"
    )
    rates: list[float] = []
    result = _fit("bag", texts, hp, None, tmp_path, keep_best=False, rates=rates)
    total = 3 * (96 // 32)  # 3 epochs of 3 full batches
    assert result.schedule == {"kind": "linear", "warmup_steps": 2, "total_steps": total}
    assert rates == pytest.approx([learning_rate_factor(step, total, 2, "linear") for step in range(total)])


def test_a_resumed_run_continues_the_schedule_where_it_stopped(
    texts: LabelledTexts, tiny_base: Path, tmp_path: Path
) -> None:
    hp = _hyperparameters("bag", tiny_base, batch_size=32, warmup_fraction=0.3, lr_schedule="cosine")
    straight_rates: list[float] = []
    straight = _fit("bag", texts, hp, tmp_path / "a", tmp_path, rates=straight_rates)
    first: list[float] = []
    with pytest.raises(Interrupted):
        _fit("bag", texts, hp, tmp_path / "b", tmp_path, stop_after=1, rates=first)
    second: list[float] = []
    resumed = _fit("bag", texts, hp, tmp_path / "b", tmp_path, rates=second)
    assert first + second == straight_rates
    assert _same_weights(straight, resumed)


def test_the_transformer_family_warms_up_and_decays_by_default() -> None:
    hp = Hyperparameters(model_family="transformer")
    assert (hp.warmup_fraction, hp.lr_schedule) == (0.1, "linear")
    assert (Hyperparameters().warmup_fraction, Hyperparameters().lr_schedule) == (0.0, "constant")


def test_an_unknown_schedule_is_refused_naming_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"lr_schedule should be one of \['constant', 'linear', 'cosine'\] \(got: 'step'\)"
    ):
        Hyperparameters(lr_schedule="step")


def test_balanced_weights_make_each_label_weigh_alike() -> None:
    weights = balanced_class_weights([0, 0, 0, 1], 2)
    assert weights == pytest.approx([4 / 6, 2.0])
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)


def test_a_label_without_training_rows_gets_no_weight() -> None:
    assert balanced_class_weights([0, 0, 2], 3)[1] == 0.0


def test_the_weighted_loss_counts_a_rare_label_s_error_more() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # both rows say label 0
    weighted = weighted_cross_entropy([1.0, 3.0])
    plain = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert float(weighted(logits, torch.tensor([0, 1]))) > float(plain)
    assert float(weighted(logits, torch.tensor([0, 0]))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])))
    )


def test_the_linear_bag_weighs_classes_balanced_by_default_and_the_others_do_not() -> None:
    assert Hyperparameters().class_weighting == "balanced"
    assert Hyperparameters(bag_head="embedding").class_weighting == "none"
    assert Hyperparameters(model_family="transformer").class_weighting == "none"


def test_a_student_of_a_teacher_weighs_no_class_by_default() -> None:
    assert Hyperparameters(teacher_version="v-000001").class_weighting == "none"


def test_class_weighting_none_read_from_strings_is_the_value_not_the_default() -> None:
    assert Hyperparameters.from_strings({"class_weighting": "none"}).class_weighting == "none"
    assert Hyperparameters.from_strings({"class_weighting": "null"}).class_weighting == "balanced"
    hp = Hyperparameters(class_weighting="none")
    assert Hyperparameters.from_strings(hp.to_strings()) == hp


def test_the_weighted_loss_of_a_batch_is_the_mean_of_its_halves_losses() -> None:
    """What DDP (each process half the batch, gradients averaged) and accumulation rely on."""
    generator = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(8, 2, generator=generator), torch.tensor([0, 0, 0, 1, 0, 1, 1, 1])
    weighted = weighted_cross_entropy([0.6, 3.0])
    halves = (weighted(logits[:4], targets[:4]) + weighted(logits[4:], targets[4:])) / 2
    assert float(weighted(logits, targets)) == pytest.approx(float(halves))


def test_class_weighting_with_a_teacher_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"class_weighting should be none with a teacher_version"):
        Hyperparameters(class_weighting="balanced", teacher_version="v-000001")


def test_an_unknown_class_weighting_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"class_weighting should be one of \['none', 'balanced'\] \(got: 'auto'\)"):
        Hyperparameters(class_weighting="auto")
