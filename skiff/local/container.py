"""Run training/train.py as a process under the SageMaker training-container contract.

Used by ``skiff train``, the tests and the local stack's training executor, so that every
local run exercises exactly what SageMaker will run: channels as directories, the SM_*
environment, hyperparameters as ``--name value`` strings, ``failure`` as the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.errors import ConfigError
from skiff.model.hyperparameters import Hyperparameters
from training import progress  # the job's progress protocol; torch-free


def training_script() -> Path:
    """Where training/train.py lives, found without importing (and so without torch)."""
    spec = importlib.util.find_spec("training")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("expected the 'training' package to be installed (got: not found); install skiff[train]")
    return Path(next(iter(spec.submodule_search_locations))) / "train.py"


@dataclass(frozen=True)
class ContainerRun:
    """The outcome of one local training job."""

    returncode: int
    model_dir: Path
    output_dir: Path
    log_path: Path
    stopped: bool = False  # ended by a stop request, not by itself

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0

    @property
    def failure_reason(self) -> str | None:
        """What SageMaker would report as FailureReason (the ``failure`` file), if it failed."""
        if self.succeeded:
            return None
        if self.stopped:
            return "Stopped: the local stack stopped while the job ran"
        failure = self.output_dir / "failure"
        if failure.is_file():
            return failure.read_text(encoding="utf-8").strip()
        tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        return f"AlgorithmError: exit code {self.returncode}: " + " | ".join(tail)


def run_training_container(
    root: Path,
    channels: Mapping[str, Path],
    hyperparameters: Hyperparameters,
    *,
    job_name: str = "local-training-job",
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> ContainerRun:
    """Lay out ``root`` like /opt/ml, run the entry point, and stream its progress events.

    A channel may be a file (placed into its directory) or a directory (copied). Setting
    ``cancel`` stops the job (SIGTERM to its process group, SIGKILL after STOP_GRACE_SECONDS),
    as StopTrainingJob would; the job also dies with the process that started it.
    """
    if "train" not in channels:
        raise ConfigError(f"expected a 'train' channel (got: {sorted(channels)})")
    data_root = root / "input" / "data"
    for name, source in channels.items():
        target = data_root / name
        if target.exists():
            shutil.rmtree(target)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir(parents=True)
            shutil.copy(source, target / source.name)
    model_dir, output_dir = root / "model", root / "output"
    output_data_dir, checkpoint_dir = output_dir / "data", root / "checkpoints"
    for directory in (model_dir, output_data_dir, checkpoint_dir):
        directory.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **(extra_env or {}),
        "TRAINING_JOB_NAME": job_name,
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DIR": str(output_dir),
        "SM_OUTPUT_DATA_DIR": str(output_data_dir),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(hyperparameters.to_strings()),
        **{f"SM_CHANNEL_{name.upper()}": str(data_root / name) for name in channels},
    }
    env.setdefault("SM_NUM_GPUS", "0")
    arguments = [f"--checkpoint-dir={checkpoint_dir}"]
    for name, value in hyperparameters.to_strings().items():
        arguments += [f"--{name}", value]
    log_path = output_dir / "training.log"
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, str(training_script()), *arguments],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: a stop reaches torchrun's workers too
            preexec_fn=_die_with_parent,
        )
        if cancel is not None:
            threading.Thread(target=_stop_when, args=(cancel, process), name="job-stopper", daemon=True).start()
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if on_progress is not None and (event := progress.parse(line)) is not None:
                on_progress(event)
        returncode = process.wait()
    return ContainerRun(returncode, model_dir, output_dir, log_path, stopped=bool(cancel and cancel.is_set()))


STOP_GRACE_SECONDS = 5


def _stop_when(cancel: threading.Event, process: subprocess.Popen[str]) -> None:
    while process.poll() is None:
        if cancel.wait(0.5):
            for signum, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(grace)
                    return
            return


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl  # loaded here: the child may only call it


_PRCTL = _libc_prctl()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGKILL when the thread that started it ends, so a
    killed local stack leaves no training process behind writing into a new stack's folders."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
