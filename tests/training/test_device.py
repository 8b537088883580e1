"""Device-dependent choices: batch and learning rate, precision, CPU threads."""

from __future__ import annotations

import math

import pytest
import torch

from skiff.cpus import available_cpus
from skiff.errors import ConfigError
from skiff.model.hyperparameters import Hyperparameters
from training.device import GPU_BATCH, BatchPlan, Distributed, autocast_dtype, set_threads

ONE = Distributed(world_size=1, rank=0, local_rank=0)
CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_an_explicit_batch_keeps_its_learning_rate() -> None:
    plan = BatchPlan.for_run(Hyperparameters(batch_size=64, learning_rate=0.01), GPU, ONE)
    assert (plan.batch_size, plan.learning_rate, plan.automatic) == (64, 0.01, False)


def test_the_automatic_batch_is_32_on_cpu_with_the_family_learning_rate() -> None:
    plan = BatchPlan.for_run(Hyperparameters(model_family="transformer"), CPU, ONE)
    assert (plan.batch_size, plan.learning_rate) == (32, 5e-5)


def test_the_automatic_batch_on_a_gpu_is_larger_and_its_learning_rate_scaled() -> None:
    plan = BatchPlan.for_run(Hyperparameters(model_family="transformer"), GPU, ONE)
    assert plan.batch_size == GPU_BATCH
    assert plan.learning_rate == pytest.approx(5e-5 * math.sqrt(GPU_BATCH / 32))
    assert "scaled by sqrt(batch/32)" in plan.describe()


def test_the_batch_is_split_over_ranks_and_accumulation_steps() -> None:
    plan = BatchPlan.for_run(Hyperparameters(batch_size=64, gradient_accumulation_steps=2), CPU, Distributed(4, 1, 1))
    assert (plan.micro_batch, plan.accumulation) == (8, 2)


def test_a_batch_that_does_not_split_evenly_is_refused() -> None:
    expected = r"multiple of world_size × gradient_accumulation_steps \(got: 30 for 4 × 1\)"
    with pytest.raises(ConfigError, match=expected):
        BatchPlan.for_run(Hyperparameters(batch_size=30), CPU, Distributed(4, 0, 0))


def test_no_mixed_precision_on_cpu() -> None:
    assert autocast_dtype(CPU, enabled=True) is None


def test_threads_follow_the_cpus_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert set_threads(ONE) == available_cpus() == torch.get_num_threads()
        assert set_threads(Distributed(2, 0, 0, local_world_size=2)) == max(1, available_cpus() // 2)
    finally:
        torch.set_num_threads(before)


def test_omp_num_threads_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        assert set_threads(ONE) == 1
    finally:
        torch.set_num_threads(before)
