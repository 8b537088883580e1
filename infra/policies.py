"""IAM policy documents as data, so every policy can be read (and tested) as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi


def statement(actions: Sequence[str], resources: Sequence[Any], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), "Resource": list(resources), **extra}


def document(statements: Sequence[dict[str, Any]]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role(service: str) -> str:
    import json

    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )
