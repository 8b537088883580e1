"""The CPUs a process may use, for torch (training) and onnxruntime (serving)."""

from __future__ import annotations

import os

from skiff.cpus import available_cpus


def test_never_more_than_the_affinity_mask_and_never_none() -> None:
    assert 1 <= available_cpus({}) <= len(os.sched_getaffinity(0))


def test_a_small_lambda_function_counts_the_vcpus_its_memory_buys() -> None:
    assert available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"}) == 1
    assert available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}) == 1


def test_a_large_lambda_function_is_still_capped_by_the_cpus_it_sees() -> None:
    seen = available_cpus({})
    assert available_cpus({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"}) == min(seen, 10240 // 1769)
