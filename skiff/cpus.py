"""How many CPUs this process may really use: for torch's threads in training and onnxruntime's
in serving (one implementation for both rooms; no heavy import here)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

LAMBDA_MB_PER_VCPU = 1769
"""Lambda's CPU share grows with memory: one full vCPU at 1,769 MB. The VM still shows two
CPUs below that, so counting them would oversubscribe a small function."""


def available_cpus(environ: Mapping[str, str] | None = None) -> int:
    """The affinity mask, capped by a cgroup v2 CPU quota and, on Lambda, by the vCPUs the
    function's memory buys."""
    e = os.environ if environ is None else environ
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: the affinity mask is the limit
    memory = e.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if memory.isdigit():
        cpus = min(cpus, max(1, int(memory) // LAMBDA_MB_PER_VCPU))
    return max(1, cpus)
