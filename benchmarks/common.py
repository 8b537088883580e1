"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMS = ROOT.parent / "shared" / "data" / "sms-spam"

# Peak RSS is read inside the child: a forked child's ru_maxrss starts at the parent's
# high-water mark, so wait4's figure would report the (possibly torch-laden) parent.
PEAK_RSS = """
def PEAK_RSS_KIB():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""


def fresh_process(code: str, *args: str, env: Mapping[str, str] | None = None) -> tuple[float, list[str]]:
    """Run ``code`` in a new interpreter: (its spawn time as epoch seconds, words of its last stdout line).

    A child that prints ``time.time()`` at its first answer lets the caller compute the
    wall time from spawn to that answer, excluding whatever the child does afterwards.
    """
    began = time.time()
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RSS + code, *args],
        capture_output=True,
        cwd=ROOT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if run.returncode != 0:
        raise RuntimeError(f"child failed: {run.stderr[-3000:]}")
    return began, run.stdout.strip().splitlines()[-1].split()


def latency_us(run: Callable[[], object], repeats: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - began) / 1000)
    samples.sort()
    return {"p50": statistics.median(samples), "p99": samples[max(0, int(len(samples) * 0.99) - 1)]}


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown cpu")
    return f"{platform.machine()}, {os.cpu_count()} cpus, {model}, Python {platform.python_version()}"
