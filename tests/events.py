"""Build handler inputs from the captured AWS events in ../shared/events (never from scratch)."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from tests.conftest import EVENTS


@cache
def _captured(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def captured(name: str) -> dict[str, Any]:
    return copy.deepcopy(_captured(name))


def http_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str | None = "application/json",
    query: dict[str, str] | None = None,
    iam_user_arn: str | None = None,
    fixture: str = "apigw-http-v2-post.json",
) -> dict[str, Any]:
    """The captured HTTP API v2 event, re-aimed at ``method path`` with this body."""
    event = captured(fixture)
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    if query:
        event["queryStringParameters"] = query
    else:
        event.pop("queryStringParameters", None)
    headers = {k: v for k, v in event["headers"].items() if k not in ("content-type", "content-length")}
    if content_type:
        headers["content-type"] = content_type
    event["headers"] = headers
    if body is None:
        event.pop("body", None)
    else:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
        headers["content-length"] = str(len(event["body"].encode()))
    event["isBase64Encoded"] = False
    if iam_user_arn is not None:
        event["requestContext"]["authorizer"] = captured("apigw-http-v2-iam-auth.json")["requestContext"]["authorizer"]
        event["requestContext"]["authorizer"]["iam"]["userArn"] = iam_user_arn
    return event
