"""Training loop with per-epoch checkpoints that make an interrupted run resumable.

Determinism: every epoch reseeds torch from (seed, epoch) before shuffling and dropout, so
the random stream of epoch k does not depend on whether epochs 1..k-1 ran in this process
or in one that was interrupted (a reclaimed spot instance). Together with the model and
optimizer state in the checkpoint, a resumed CPU run ends with bit-identical weights.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skiff.errors import TrainingError
from skiff.features import pad_ids
from skiff.hyperparameters import Hyperparameters
from training.model import BagOfNgrams

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-epoch-"
KEEP_CHECKPOINTS = 2


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    eval_accuracy: float
    seconds: float


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

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds else 0.0


def choose_device(num_gpus: int | None = None) -> torch.device:
    wanted = num_gpus if num_gpus is not None else int(os.environ.get("SM_NUM_GPUS", "1"))
    return torch.device("cuda") if wanted > 0 and torch.cuda.is_available() else torch.device("cpu")


def _autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _checkpoints(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{CHECKPOINT_PREFIX}*.pt"))


def _identity(hp: Hyperparameters, labels: Sequence[str], fingerprint: str) -> dict[str, Any]:
    """What a checkpoint must share with this run to be resumed from."""
    return {"hyperparameters": hp.to_dict(), "labels": list(labels), "dataset_fingerprint": fingerprint}


def _save_checkpoint(directory: Path, epoch: int, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{epoch:04d}.pt"
    partial = final.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(final)  # atomic: an interruption never leaves a half-written checkpoint
    for old in _checkpoints(directory)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def fit(
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    eval_ids: Sequence[Sequence[int]],
    eval_labels: Sequence[int],
    labels: Sequence[str],
    hp: Hyperparameters,
    *,
    dataset_fingerprint: str,
    checkpoint_dir: Path | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    device = device or choose_device()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(hp.seed)
    model = BagOfNgrams(hp.buckets, hp.embedding_dim, len(labels), hp.dropout).to(device)
    sparse_optimizer = torch.optim.SparseAdam(list(model.embedding.parameters()), lr=hp.learning_rate)
    dense_optimizer = torch.optim.Adam(list(model.classifier.parameters()), lr=hp.learning_rate)
    amp_dtype = _autocast_dtype(device, hp.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    result = FitResult(
        model=model, device=str(device), precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32"
    )
    identity = _identity(hp, labels, dataset_fingerprint)

    start_epoch = 1
    if checkpoint_dir is not None and (existing := _checkpoints(checkpoint_dir)):
        state = torch.load(existing[-1], map_location=device, weights_only=False)
        if state["identity"] != identity:
            raise TrainingError(
                f"expected checkpoints in {checkpoint_dir} from this dataset and these hyperparameters "
                f"(got: {existing[-1].name} from another run); use an empty checkpoint directory"
            )
        model.load_state_dict(state["model"])
        sparse_optimizer.load_state_dict(state["sparse_optimizer"])
        dense_optimizer.load_state_dict(state["dense_optimizer"])
        scaler.load_state_dict(state["scaler"])
        result.history = [EpochRecord(**r) for r in state["history"]]
        start_epoch = state["epoch"] + 1
        result.resumed_from_epoch = state["epoch"]
        log.info("resuming from %s (epoch %d of %d)", existing[-1].name, state["epoch"], hp.epochs)

    targets = torch.as_tensor(list(train_labels), dtype=torch.long)
    eval_matrix = torch.from_numpy(pad_ids(eval_ids))
    eval_targets = torch.as_tensor(list(eval_labels), dtype=torch.long)
    for epoch in range(start_epoch, hp.epochs + 1):
        began = time.perf_counter()
        torch.manual_seed(hp.seed * 100_003 + epoch)
        order = torch.randperm(len(train_ids)).tolist()
        model.train()
        total_loss = 0.0
        for first in range(0, len(order), hp.batch_size):
            rows = order[first : first + hp.batch_size]
            batch = torch.from_numpy(pad_ids([train_ids[i] for i in rows])).to(device)
            target = targets[rows].to(device)
            sparse_optimizer.zero_grad()
            dense_optimizer.zero_grad()
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = loss_fn(model(batch), target)
            scaler.scale(loss).backward()
            scaler.step(sparse_optimizer)
            scaler.step(dense_optimizer)
            scaler.update()
            total_loss += loss.item() * len(rows)
        seconds = time.perf_counter() - began
        result.train_seconds += seconds
        result.samples_seen += len(order)
        record = EpochRecord(
            epoch, total_loss / len(order), evaluate(model, eval_matrix, eval_targets, device), seconds
        )
        result.history.append(record)
        if checkpoint_dir is not None:
            _save_checkpoint(
                checkpoint_dir,
                epoch,
                {
                    "identity": identity,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "sparse_optimizer": sparse_optimizer.state_dict(),
                    "dense_optimizer": dense_optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": [vars(r) for r in result.history],
                },
            )
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.eval()
    return result


@torch.no_grad()
def evaluate(model: nn.Module, matrix: torch.Tensor, targets: torch.Tensor, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    predictions = torch.cat([model(matrix[i : i + 512].to(device)).argmax(1).cpu() for i in range(0, len(matrix), 512)])
    model.train(was_training)
    return float((predictions == targets).float().mean())
