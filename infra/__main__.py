"""Skiff's Pulumi program: read the stack config, wire one component per concern, export."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pulumi up` runs this file from infra/; skiff and infra live one level up
    sys.path.insert(0, str(ROOT))

from infra.stack import build_stack  # noqa: E402

build_stack()
