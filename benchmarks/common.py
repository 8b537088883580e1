"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


def fresh_process(
    code: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    packages: LambdaPackages | None = None,
) -> tuple[float, list[str]]:
    """Run ``code`` in a new interpreter: (its spawn time as epoch seconds, words of its last stdout line).

    A child that prints ``time.time()`` at its first answer lets the caller compute the
    wall time from spawn to that answer, excluding whatever the child does afterwards.
    With ``packages``, the child is Lambda's Python importing only from them (see there);
    otherwise this checkout's venv.
    """
    began = time.time()
    command = [sys.executable, "-c", PEAK_RSS + code, *args]
    if packages is not None:
        command = packages.command(PEAK_RSS + code, *args)
    run = subprocess.run(
        command,
        capture_output=True,
        cwd=ROOT if packages is None else packages.root,
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


@dataclass(frozen=True)
class LambdaPackages:
    """The inference function as Lambda runs it: ``skiff bundle``'s x86_64 function and layer
    unpacked (/var/task, /opt/python) beside a pip-installed boto3 (the runtime's own, compiled
    as on its image), imported by the functions' Python (3.12) with ``-S`` (no site-packages,
    so nothing from this checkout's venv) and ``-B`` (Lambda's directories are read-only, so
    nothing compiled at start is kept)."""

    root: Path
    python: str
    task: Path
    layer: Path
    runtime: Path
    zipped_bytes: int  # function + layer
    unzipped_bytes: int

    @classmethod
    def build(cls, root: Path, bytecode: bool = True) -> LambdaPackages:
        import zipfile

        from skiff.packaging.bundle import build_all, compile_bytecode, lambda_python

        python = lambda_python()
        runtime = root / "runtime"
        if not runtime.is_dir():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(runtime)]
                + ["--python-version", "3.12", "--only-binary=:all:", "boto3"],
                check=True,
            )
            compile_bytecode(runtime, "/var/runtime", python)
        name = "with-bytecode" if bytecode else "without-bytecode"
        report = build_all(root / f"bundle-{name}", "x86_64", functions=("inference",), bytecode=bytecode)
        task, opt = root / f"var-task-{name}", root / f"opt-{name}"
        zipfile.ZipFile(report.functions["inference"].path).extractall(task)
        zipfile.ZipFile(report.layer.path).extractall(opt)
        function = report.functions["inference"]
        return cls(
            root,
            python,
            task,
            opt / "python",
            runtime,
            zipped_bytes=report.layer.zipped_bytes + function.zipped_bytes,
            unzipped_bytes=report.layer.unzipped_bytes + function.unzipped_bytes,
        )

    def command(self, code: str, *args: str) -> list[str]:
        path = f"import sys; sys.path[:0] = {[str(self.task), str(self.layer), str(self.runtime)]!r}\n"
        return [self.python, "-S", "-B", "-c", path + code, *args]
