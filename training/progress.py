"""The job's progress protocol: one JSON object per stdout line, behind a fixed prefix.

The training job writes these lines (CloudWatch keeps them readable); the local stack's
training executor and ``skiff train`` read them to draw progress. This module is the one
definition both sides use, and it imports nothing heavy, so readers never load torch.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

PROGRESS_PREFIX = "SKIFF_PROGRESS "


def emit(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Write one progress event (``start``, ``epoch`` or ``done``) as a line of its own."""
    print(PROGRESS_PREFIX + json.dumps({"event": event, **fields}), file=stream or sys.stdout, flush=True)


def parse(line: str) -> dict[str, Any] | None:
    """The event a log line carries, or None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    return json.loads(line[len(PROGRESS_PREFIX) :])
