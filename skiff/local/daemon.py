"""The local stack as a background process: ``skiff local up`` starts it, ``down`` stops it.

It writes ``$SKIFF_HOME/local/state.json`` (its pid and the stack outputs) once everything
is listening, and removes it on the way out, so a state file always means a live stack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

from skiff.cli.client import local_state_path
from skiff.local.stack import LocalStack, LocalStackConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--hyperparameters", default="{}", help="JSON object")
    args = parser.parse_args(argv)
    state = local_state_path()
    config = LocalStackConfig(
        work_dir=state.parent / "work", api_port=args.api_port, hyperparameters=json.loads(args.hyperparameters)
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stack = LocalStack(config).start()
    try:
        partial = state.with_suffix(".tmp")
        partial.write_text(json.dumps({"pid": os.getpid(), "started_at": time.time(), "outputs": stack.outputs()}))
        partial.replace(state)
        stopping.wait()
    finally:
        state.unlink(missing_ok=True)
        stack.stop()
    return 0


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited child of ours is reaped, not counted as alive."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child (the usual case: `skiff local up` has long exited)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    # A zombie has exited and only waits for its parent to collect it.
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


def read_state(path: Path | None = None) -> dict | None:
    path = path or local_state_path()
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if not is_alive(state["pid"]):
        path.unlink(missing_ok=True)  # left behind by a killed stack
        return None
    return state


if __name__ == "__main__":
    raise SystemExit(main())
