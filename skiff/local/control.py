"""``skiff local up|down|status``: run the local stack as a background process and stop it cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from skiff.cli.client import local_state_path
from skiff.errors import SkiffError
from skiff.local.daemon import is_alive, read_state


def up(api_port: int = 0, hyperparameters: str = "{}", timeout: float = 60) -> dict[str, Any]:
    state = read_state()
    if state is not None:
        return state["outputs"]  # already running: `up` is idempotent
    path = local_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = (path.parent / "daemon.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "skiff.local.daemon", "--api-port", str(api_port), "--hyperparameters", hyperparameters],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives the CLI's exit; `down` ends it
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SkiffError(
                f"expected the local stack to start (got: exit code {process.returncode}); "
                f"see {path.parent / 'daemon.log'}"
            )
        state = read_state()
        if state is not None:
            return state["outputs"]
        time.sleep(0.2)
    process.terminate()
    raise SkiffError(
        f"expected the local stack to start within {timeout:.0f}s (got: still starting); "
        f"see {path.parent / 'daemon.log'}"
    )


def down(timeout: float = 8) -> None:
    """Stop the stack: SIGTERM (it stops its running job and saves its state), then, after
    ``timeout``, SIGKILL to its whole process group (it leads one: ``up`` starts a session)."""
    state = read_state()
    if state is None:
        return  # nothing running: `down` is idempotent
    pid = state["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # whatever is left: the daemon, if stuck, and any child
    while is_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    local_state_path().unlink(missing_ok=True)


def status() -> dict[str, Any]:
    state = read_state()
    if state is None:
        raise SkiffError("expected a running local stack (got: none); start one with `skiff local up`")
    return state["outputs"]
