"""Build handler inputs from the captured AWS events in ../shared/events (never from scratch)."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any
from urllib.parse import quote_plus

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


def sqs_s3_event(bucket: str, objects: list[tuple[str, int]]) -> dict[str, Any]:
    """One SQS message per uploaded object, as S3 -> SQS delivers them (keys URL-encoded)."""
    template = captured("sqs-with-s3-notification.json")["Records"][0]
    records = []
    for i, (key, size) in enumerate(objects):
        record = copy.deepcopy(template)
        body = json.loads(record["body"])
        s3 = body["Records"][0]["s3"]
        s3["bucket"]["name"] = bucket
        s3["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
        s3["object"].update({"key": quote_plus(key, safe="/"), "size": size})
        record["body"] = json.dumps(body)
        record["messageId"] = f"{template['messageId'][:-4]}{i:04d}"
        records.append(record)
    return {"Records": records}


def training_state_event(detail: dict[str, Any], keep_documented_fields: bool = True) -> dict[str, Any]:
    """The captured EventBridge SageMaker state-change envelope carrying ``detail``."""
    event = captured("eventbridge-sagemaker-training-job-state-change.json")
    event["detail"] = {**(event["detail"] if keep_documented_fields else {}), **detail}
    event["resources"] = [detail.get("TrainingJobArn") or event["resources"][0]]
    return event
