"""Where and how a job trains: device, processes (DDP), CPU threads, precision, batch size.

Everything here is decided from what the job finds (a GPU or not, bf16 support, torchrun's
environment, the CPUs this process may use) so that the same hyperparameters train well on
a laptop and on a SageMaker GPU instance, and the choices are stated in the log and metrics.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from skiff.cpus import available_cpus
from skiff.errors import ConfigError
from skiff.model.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

REFERENCE_BATCH = 32
"""The batch the families' learning rates were tuned at; other automatic batches scale from it."""

GPU_BATCH = 256
"""Automatic batch on a GPU: small batches leave it idle (per-step launch overhead dominates)."""


@dataclass(frozen=True)
class Distributed:
    """torchrun's environment; a plain process is a world of one."""

    world_size: int
    rank: int
    local_rank: int
    local_world_size: int = 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        env = os.environ.get
        return cls(
            int(env("WORLD_SIZE", 1)), int(env("RANK", 0)), int(env("LOCAL_RANK", 0)), int(env("LOCAL_WORLD_SIZE", 1))
        )

    def start(self) -> None:
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def choose_device(world: Distributed, num_gpus: int | None = None) -> torch.device:
    """This process's GPU when there is one and SM_NUM_GPUS (or ``num_gpus``) allows it, else the CPU."""
    wanted = num_gpus if num_gpus is not None else int(os.environ.get("SM_NUM_GPUS", "1"))
    if wanted > 0 and torch.cuda.is_available():
        return torch.device(f"cuda:{world.local_rank}")
    return torch.device("cpu")


def set_threads(world: Distributed) -> int:
    """One intra-op thread per available CPU, shared among this machine's ranks.

    torch's default counts the machine's cores, not the CPUs a container or a busy host
    grants, and oversubscribed threads make the loop many times slower. An explicit
    OMP_NUM_THREADS still wins.
    """
    explicit = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads = int(explicit) if explicit.isdigit() and int(explicit) > 0 else None
    if threads is None:
        threads = max(1, available_cpus() // max(1, world.local_world_size))
    torch.set_num_threads(threads)
    log.info("torch uses %d CPU thread(s) (%s)", threads, "OMP_NUM_THREADS" if explicit else "CPUs available")
    return threads


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16 (with a gradient scaler); none on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class BatchPlan:
    """The global batch, its learning rate, and how it is split over ranks and accumulation."""

    batch_size: int
    learning_rate: float
    micro_batch: int
    accumulation: int
    automatic: bool

    @classmethod
    def for_run(cls, hp: Hyperparameters, device: torch.device, world: Distributed) -> BatchPlan:
        """An explicit ``batch_size`` is kept with the given learning rate. Left unset, the
        batch is REFERENCE_BATCH on CPU and GPU_BATCH on a GPU, and the learning rate scales by
        sqrt(batch / REFERENCE_BATCH), the usual rule for Adam-family optimizers."""
        automatic = hp.batch_size is None
        if hp.batch_size is not None:
            batch, rate = hp.batch_size, float(hp.learning_rate)  # type: ignore[arg-type]
        else:
            batch = GPU_BATCH if device.type == "cuda" else REFERENCE_BATCH
            batch = max(batch, world.world_size * hp.gradient_accumulation_steps)
            rate = float(hp.learning_rate) * math.sqrt(batch / REFERENCE_BATCH)  # type: ignore[arg-type]
        split = world.world_size * hp.gradient_accumulation_steps
        if batch % split:
            raise ConfigError(
                f"batch_size should be a multiple of world_size × gradient_accumulation_steps "
                f"(got: {batch} for {world.world_size} × {hp.gradient_accumulation_steps})"
            )
        return cls(batch, rate, batch // split, hp.gradient_accumulation_steps, automatic)

    def describe(self) -> str:
        how = "automatic for this device, learning rate scaled by sqrt(batch/32)" if self.automatic else "as given"
        return (
            f"batch {self.batch_size} ({how}), learning rate {self.learning_rate:g}, "
            f"micro-batch {self.micro_batch} × {self.accumulation} accumulation step(s) per rank"
        )
