"""The one training loop: every model family plugs into it through a :class:`TrainingTask`.

Written once here: epochs, length-bucketed batches from pre-tokenized tensors, mixed
precision (bf16, else fp16 with a gradient scaler), DistributedDataParallel with gradient
accumulation, per-epoch checkpoints that make an interrupted run resumable (spot), evaluation,
progress callbacks and the metrics history. What differs between families — the model, its
optimizers, its inputs and its loss — comes in the task.

Determinism: each epoch reseeds from (seed, epoch) before shuffling and dropout, so the
random stream of epoch k does not depend on whether epochs 1..k-1 ran in this process or in
one that was interrupted (a reclaimed spot instance). Together with the model and optimizer
state in the checkpoint, a resumed CPU run ends with bit-identical weights.

Scale-out: under ``torchrun`` every process trains a DDP replica. Global batch k holds the
same rows whatever the number of processes: rank r takes rows r, r + W, ... of it and splits
them into micro-batches for gradient accumulation. Rank 0 alone evaluates and checkpoints.

On a GPU the loop keeps the device fed: the data lives on the device, a step ships only its
row indices (pinned, non-blocking), the loss is summed on the device and read once per
epoch, and optimizers use their fused kernels where torch has them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from skiff.errors import ConfigError, TrainingError
from skiff.model.hyperparameters import Hyperparameters
from training.batches import RaggedTokens, length_bucketed_batches, padding_share
from training.device import BatchPlan, Distributed, autocast_dtype, choose_device, set_threads

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-epoch-"
KEEP_CHECKPOINTS = 2
EVAL_BATCH = 256


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    validation_accuracy: float
    validation_loss: float
    seconds: float

    def beats(self, other: EpochRecord | None) -> bool:
        """Better on the validation split: higher accuracy, then lower loss (a few hundred rows
        often tie on accuracy; the loss still tells the epochs apart)."""
        if other is None:
            return True
        return (self.validation_accuracy, -self.validation_loss) > (other.validation_accuracy, -other.validation_loss)


@dataclass(frozen=True)
class TrainingTask:
    """What a model family hands the loop."""

    build_model: Callable[[], nn.Module]
    """Called after seeding, so the initial weights depend on the seed only."""
    build_optimizers: Callable[[nn.Module, float, torch.device], list[torch.optim.Optimizer]]
    """(model, learning rate, device) -> optimizers; each steps once per global batch."""
    inputs: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
    """(padded ids, boolean mask) -> the model's keyword arguments."""
    train: RaggedTokens
    train_targets: torch.Tensor
    validation: RaggedTokens
    """The held-out rows scored after every epoch (the validation split; training/pipeline.py)."""
    validation_targets: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default_factory=nn.CrossEntropyLoss)
    """(logits, targets of the batch's rows) -> mean loss; targets may be labels or soft targets."""


def balanced_class_weights(targets: Sequence[int], num_labels: int) -> list[float]:
    """rows / (labels × rows of the label) per label: every label weighs as much in the loss as
    the others together would if they were as frequent. A label with no training rows gets 0."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_labels)
    rows = int(counts.sum())
    return [rows / (num_labels * int(c)) if c else 0.0 for c in counts]


def weighted_cross_entropy(weights: Sequence[float]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy with a weight per label, averaged over the batch's rows, on whatever device
    the logits are.

    Not torch's ``weight=`` mean, which divides by the batch's sum of weights: that sum differs
    from one slice of a batch to another, so two processes' losses (whose gradients DDP
    averages) or accumulated micro-batches would not add up to the whole batch's. Over the
    training rows balanced weights average 1, so the step keeps its unweighted size."""
    table = torch.tensor(list(weights), dtype=torch.float32)

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_row = nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        return (per_row * table.to(logits.device)[targets]).mean()

    return loss


@dataclass
class FitResult:
    model: nn.Module
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_seen: int = 0
    resumed_from_epoch: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    world_size: int = 1
    batch_size: int = 0
    learning_rate: float = 0.0
    threads: int = 1
    padding_share: float = 0.0
    is_writer: bool = True
    best_epoch: int = 0
    """The epoch whose weights ``model`` holds (the last one unless the best was kept)."""
    stopped_early: bool = False
    schedule: dict[str, Any] = field(default_factory=dict)
    """The learning-rate schedule as run: its kind, warm-up steps and total optimizer steps."""
    class_weights: list[float] | None = None
    """Per label, what its rows weigh in the loss (None: every row alike)."""

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds else 0.0


def learning_rate_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """What the base learning rate is multiplied by at optimizer step ``step`` (0-based) of
    ``total``: a linear rise over the first ``warmup`` steps (never 0: the first step moves),
    then ``schedule`` ("constant", "linear" down to 0 after the last step, or "cosine")."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ConfigError(f"lr_schedule should be one of constant, linear, cosine (got: {schedule!r})")


def _checkpoints(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{CHECKPOINT_PREFIX}*.pt"))


def _save_checkpoint(directory: Path, epoch: int, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{epoch:04d}.pt"
    partial = final.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(final)  # atomic: an interruption never leaves a half-written checkpoint
    for old in _checkpoints(directory)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def fit(
    task: TrainingTask,
    hp: Hyperparameters,
    labels: list[str],
    *,
    dataset_fingerprint: str,
    checkpoint_dir: Path | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    keep_best: bool = True,
) -> FitResult:
    """Train ``task`` for ``hp.epochs``; with ``keep_best`` (the validation rows are held out
    from every split the caller reports on), return the weights of the best epoch on them and
    stop after ``hp.early_stopping_patience`` epochs without a better one."""
    world = Distributed.from_env()
    world.start()
    device = device or choose_device(world)
    threads = set_threads(world)
    plan = BatchPlan.for_run(hp, device, world)
    if len(task.train) < plan.batch_size:
        raise ConfigError(f"expected at least batch_size={plan.batch_size} training rows (got: {len(task.train)})")
    log.info("training on %s, world size %d: %s", device, world.world_size, plan.describe())
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(hp.seed)
    model = task.build_model().to(device)
    trained: nn.Module = model
    if world.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # A model whose forward leaves some parameters without gradients says so.
            find_unused_parameters=getattr(model, "ddp_find_unused_parameters", False),
        )
    optimizers = task.build_optimizers(model, plan.learning_rate, device)
    class_weights = None
    if hp.class_weighting == "balanced":
        class_weights = balanced_class_weights(task.train_targets.tolist(), len(labels))
        task = replace(task, loss=weighted_cross_entropy(class_weights))
        log.info("class weights: %s", ", ".join(f"{n} {w:.3f}" for n, w in zip(labels, class_weights, strict=True)))
    # Each parameter group's own rate is its base (the bag's bias steps at a share of the rows');
    # the schedule sets every step's rate from the step's number alone, so a resumed run
    # continues the curve without saving any scheduler state.
    base_rates = [[float(group["lr"]) for group in optimizer.param_groups] for optimizer in optimizers]
    steps_per_epoch = len(task.train) // plan.batch_size
    total_steps = steps_per_epoch * int(hp.epochs)  # type: ignore[arg-type]
    warmup_steps = round(total_steps * float(hp.warmup_fraction or 0.0))
    schedule = str(hp.lr_schedule)
    log.info("learning rate: %d warm-up step(s), then %s, over %d steps", warmup_steps, schedule, total_steps)
    amp_dtype = autocast_dtype(device, hp.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    result = FitResult(
        model=model,
        device=str(device),
        precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
        world_size=world.world_size,
        batch_size=plan.batch_size,
        learning_rate=plan.learning_rate,
        threads=threads,
        is_writer=world.is_writer,
        schedule={"kind": schedule, "warmup_steps": warmup_steps, "total_steps": total_steps},
        class_weights=class_weights,
    )
    # What a checkpoint must share with this run to be resumed from.
    identity = {
        "hyperparameters": hp.to_dict(),
        "batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate,
        "labels": list(labels),
        "dataset_fingerprint": dataset_fingerprint,
    }
    start_epoch = 1
    # The best epoch so far on the validation split, and its weights once the model has moved
    # past them (None while the model's own weights are the best: no copy is kept until then).
    best_record: EpochRecord | None = None
    best_state: dict[str, torch.Tensor] | None = None
    previous_state: dict[str, torch.Tensor] | None = None
    if checkpoint_dir is not None and (existing := _checkpoints(checkpoint_dir)):
        state = torch.load(existing[-1], map_location=device, weights_only=False)
        if state["identity"] != identity:
            raise TrainingError(
                f"expected checkpoints in {checkpoint_dir} from this dataset and these hyperparameters "
                f"(got: {existing[-1].name} from another run); use an empty checkpoint directory"
            )
        model.load_state_dict(state["model"])
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        scaler.load_state_dict(state["scaler"])
        result.history = [EpochRecord(**r) for r in state["history"]]
        start_epoch = state["epoch"] + 1
        result.resumed_from_epoch = state["epoch"]
        best_record = next((r for r in result.history if r.epoch == state["best"]["epoch"]), None)
        best_state = state["best"]["model"]  # None: the best epoch is the checkpoint's own
        if best_state is None and best_record is not None:
            previous_state = _cpu_copy(model)
        result.stopped_early = state["stopped_early"]
        log.info("resuming from %s (epoch %d of %d)", existing[-1].name, state["epoch"], hp.epochs)

    train, validation = task.train.to(device), task.validation.to(device)
    targets, validation_targets = task.train_targets.to(device), task.validation_targets.to(device)
    pin = device.type == "cuda"
    padded_shares = []
    for epoch in range(start_epoch, int(hp.epochs) + 1):  # type: ignore[arg-type]
        if result.stopped_early:
            break  # resumed from the checkpoint of the epoch that stopped it
        began = time.perf_counter()
        seed = hp.seed * 100_003 + epoch
        torch.manual_seed(seed)  # dropout
        batches = length_bucketed_batches(
            train.host_lengths, plan.batch_size, torch.Generator().manual_seed(seed), bucket=hp.length_bucketing
        )
        padded_shares.append(padding_share(train.host_lengths, batches))
        trained.train()
        total = torch.zeros((), device=device)
        for step, batch in enumerate(batches, start=(epoch - 1) * steps_per_epoch):
            factor = learning_rate_factor(step, total_steps, warmup_steps, schedule)
            for optimizer, rates in zip(optimizers, base_rates, strict=True):
                for group, rate in zip(optimizer.param_groups, rates, strict=True):
                    group["lr"] = rate * factor
            mine = batch[world.rank :: world.world_size]
            for part, rows in enumerate(mine.split(plan.micro_batch)):
                if pin:
                    rows = rows.pin_memory()
                ids, mask = train.gather(rows, device)
                last = part == plan.accumulation - 1
                sync = trained.no_sync() if world.world_size > 1 and not last else contextlib.nullcontext()
                with sync:
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        logits = trained(**task.inputs(ids, mask))
                        loss = task.loss(logits, targets[rows.to(device, non_blocking=True)])
                    scaler.scale(loss / plan.accumulation).backward()
                total += loss.detach() * len(rows)
            for optimizer in optimizers:
                scaler.step(optimizer)
            scaler.update()
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
        if world.world_size > 1:
            dist.all_reduce(total)
        seconds = time.perf_counter() - began
        seen = len(batches) * plan.batch_size
        result.train_seconds += seconds
        result.samples_seen += seen
        accuracy, validation_loss = (
            evaluate(model, task, validation, validation_targets, device) if world.is_writer else (math.nan, math.nan)
        )
        record = EpochRecord(epoch, float(total) / seen, accuracy, validation_loss, seconds)
        result.history.append(record)
        if keep_best and world.is_writer and record.beats(best_record):
            best_record, best_state = record, None  # this epoch's weights are the model's own
        elif keep_best and world.is_writer and best_state is None:
            best_state = previous_state  # the model moves on; the best epoch's weights stay
        patience = hp.early_stopping_patience
        stop = keep_best and patience > 0 and best_record is not None and epoch - best_record.epoch >= patience
        if world.world_size > 1:  # only rank 0 evaluates; every rank stops with it
            flag = torch.tensor([int(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        result.stopped_early = stop and epoch < int(hp.epochs)  # type: ignore[arg-type]
        if checkpoint_dir is not None and world.is_writer:
            _save_checkpoint(
                checkpoint_dir,
                epoch,
                {
                    "identity": identity,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizers": [optimizer.state_dict() for optimizer in optimizers],
                    "scaler": scaler.state_dict(),
                    "history": [vars(r) for r in result.history],
                    "best": {"epoch": best_record.epoch if best_record else 0, "model": best_state},
                    "stopped_early": result.stopped_early,
                },
            )
        if world.world_size > 1:
            dist.barrier()  # nobody starts the next epoch (or exports) before the checkpoint exists
        if on_epoch_end is not None and world.is_writer:
            on_epoch_end(record)
        if result.stopped_early:
            if best_record is not None:  # rank 0's
                log.info(
                    "stopping after epoch %d: %d epochs without beating epoch %d on the validation split",
                    epoch,
                    patience,
                    best_record.epoch,
                )
            break
        if keep_best and world.is_writer and best_state is None and epoch < int(hp.epochs):  # type: ignore[arg-type]
            previous_state = _cpu_copy(model)  # what to keep if the next epoch is worse
    result.padding_share = sum(padded_shares) / len(padded_shares) if padded_shares else 0.0
    result.best_epoch = result.history[-1].epoch if result.history else 0
    if best_record is not None and best_state is not None:
        model.load_state_dict(best_state)
        result.best_epoch = best_record.epoch
        log.info(
            "keeping epoch %d (validation accuracy %.4f, loss %.4f) over the last, epoch %d",
            best_record.epoch,
            best_record.validation_accuracy,
            best_record.validation_loss,
            result.history[-1].epoch,
        )
    model.eval()
    return result


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


@torch.no_grad()
def evaluate(
    model: nn.Module, task: TrainingTask, data: RaggedTokens, targets: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``data``; batches sorted by length, summed on the device."""
    was_training = model.training
    model.eval()
    order = torch.argsort(data.host_lengths, stable=True)
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    for rows in order.split(EVAL_BATCH):
        ids, mask = data.gather(rows, device)
        logits = model(**task.inputs(ids, mask)).float()
        wanted = targets[rows.to(device)]
        correct += (logits.argmax(1) == wanted).sum()
        loss += nn.functional.cross_entropy(logits, wanted, reduction="sum").double()
    model.train(was_training)
    rows = max(1, len(data))
    return float(correct) / rows, float(loss) / rows
