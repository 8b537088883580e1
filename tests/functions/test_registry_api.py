from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from functions.registry_api import handler
from skiff.registry.table import RETIRED
from tests.aws_fixtures import Subscriber
from tests.events import http_event
from tests.functions.conftest import Stack
from tests.functions.test_inference import Context

ADMIN = "arn:aws:sts::123456789012:assumed-role/Admin/alice"


@pytest.fixture(autouse=True)
def fresh_container() -> None:
    handler.registry.cache_clear()
    handler.notifier.cache_clear()
    handler._idempotent_change = None


def call(
    method: str, path: str, body: Any = None, idempotency_key: str | None = None, **options: Any
) -> tuple[int, dict[str, Any]]:
    options.setdefault("iam_user_arn", ADMIN)
    event = http_event(method, path, body, **options)
    if idempotency_key is not None:
        event["headers"]["idempotency-key"] = idempotency_key
    response = handler.lambda_handler(event, Context())
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture
def versions(stack: Stack) -> list[str]:
    metrics = {"accuracy": 0.98}
    return [
        stack.registry.register(
            artifact_uri="s3://b/models/x/", manifest_sha256="ab" * 32, metrics=metrics, lineage={}
        ).version
        for _ in range(3)
    ]


def test_list_is_newest_first_with_a_cursor(versions: list[str]) -> None:
    status, page = call("GET", "/models", query={"limit": "2"})
    assert status == 200
    assert [m["version"] for m in page["models"]] == versions[::-1][:2]
    status, rest = call("GET", "/models", query={"limit": "2", "cursor": page["next_cursor"]})
    assert [m["version"] for m in rest["models"]] == versions[:1] and rest["next_cursor"] is None


def test_list_limit_is_validated(versions: list[str]) -> None:
    status, body = call("GET", "/models", query={"limit": "1000"})
    assert status == 400 and "limit" in body["error"]["message"]


def test_bad_cursor_is_400(versions: list[str]) -> None:
    status, body = call("GET", "/models", query={"cursor": "not/a/version"})
    assert status == 400 and "cursor" in body["error"]["message"]


def test_any_version_id_is_a_cursor_for_the_versions_older_than_it(versions: list[str]) -> None:
    status, page = call("GET", "/models", query={"cursor": versions[1]})
    assert status == 200 and [m["version"] for m in page["models"]] == versions[:1]
    status, page = call("GET", "/models", query={"cursor": "0-before-every-version"})
    assert (status, page) == (200, {"models": [], "next_cursor": None})


def test_get_one_version(versions: list[str]) -> None:
    status, body = call("GET", f"/models/{versions[0]}")
    assert (status, body["version"], body["status"]) == (200, versions[0], "candidate")


def test_unknown_version_is_404(versions: list[str]) -> None:
    status, body = call("GET", "/models/v19990101-000000000-0000")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_malformed_version_id_is_400(versions: list[str]) -> None:
    status, _ = call("GET", "/models/..%2F..%2Fetc")
    assert status in (400, 404)
    status, body = call("POST", "/models/$bad/promote", {"reason": "x"})
    assert status == 400 and "version" in body["error"]["message"]


def test_promote_records_the_iam_caller_as_actor(stack: Stack, versions: list[str]) -> None:
    status, change = call("POST", f"/models/{versions[0]}/promote", {"reason": "first model"})
    assert status == 200
    assert (change["version"], change["actor"], change["revision"]) == (versions[0], ADMIN, 1)
    assert stack.registry.production_version() == versions[0]


def test_promote_without_reason_is_400(versions: list[str]) -> None:
    status, body = call("POST", f"/models/{versions[0]}/promote", {})
    assert status == 400 and "reason" in body["error"]["message"]


def test_promote_with_non_json_body_is_415(versions: list[str]) -> None:
    status, body = call("POST", f"/models/{versions[0]}/promote", "reason=x", content_type="text/plain")
    assert (status, body["error"]["message"]) == (415, "expected content-type application/json (got: text/plain)")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 10_000, "expected JSON nested at most 16 levels deep (got: deeper)"),
        ('{"reason": ' + "1" * 5000 + "}", "expected numbers of at most 30 digits (got: 5000)"),
    ],
    ids=["deep", "long-number"],
)
def test_hostile_promote_bodies_are_400(versions: list[str], raw: str, message: str) -> None:
    status, body = call("POST", f"/models/{versions[0]}/promote", raw)
    assert (status, body["error"]["message"]) == (400, message)


def test_a_promote_body_that_is_not_utf8_is_400(versions: list[str]) -> None:
    event = http_event("POST", f"/models/{versions[0]}/promote", "", iam_user_arn=ADMIN)
    event["body"], event["isBase64Encoded"] = base64.b64encode(b'{"reason": "\xff"}').decode(), True
    response = handler.lambda_handler(event, Context())
    assert response["statusCode"] == 400 and "UTF-8" in json.loads(response["body"])["error"]["message"]


def test_promoting_a_rejected_version_is_409_with_the_reason(stack: Stack, versions: list[str]) -> None:
    stack.registry.reject(versions[0], "accuracy below production")
    status, body = call("POST", f"/models/{versions[0]}/promote", {"reason": "try"})
    assert status == 409 and "rejected: accuracy below production" in body["error"]["message"]


def test_rollback_returns_to_the_previous_version(stack: Stack, versions: list[str]) -> None:
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"})
    call("POST", f"/models/{versions[1]}/promote", {"reason": "two"})
    status, change = call("POST", "/rollback", {"reason": "error rate alarm"})
    assert (status, change["version"], change["previous_version"]) == (200, versions[0], versions[1])
    assert stack.registry.get(versions[1]).status == RETIRED


def test_a_rollback_by_hand_is_notified_with_who_and_why(
    stack: Stack, versions: list[str], subscriber: Subscriber
) -> None:
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"})
    call("POST", f"/models/{versions[1]}/promote", {"reason": "two"})
    call("POST", "/rollback", {"reason": "error rate alarm"})
    events = [(n["Message"]["event"], n["Message"]["version"]) for n in subscriber.received()]
    assert events == [("promoted", versions[0]), ("promoted", versions[1]), ("rolled-back", versions[0])]


def test_a_replayed_rollback_is_notified_once(stack: Stack, versions: list[str], subscriber: Subscriber) -> None:
    for version in versions[:2]:
        call("POST", f"/models/{version}/promote", {"reason": "up"})
    subscriber.received()
    for _ in range(2):
        call("POST", "/rollback", {"reason": "alarm"}, idempotency_key="rollback-0002")
    (notice,) = subscriber.received()
    assert notice["Message"]["actor"] == ADMIN and notice["Message"]["reason"] == "alarm"
    subject = notice["Subject"]  # cut to fit SNS's 100 characters; the message has it all
    assert (
        subject.startswith(f"[skiff-test] production rolled back to {versions[0]} by arn:aws:sts")
        and len(subject) < 100
    )


def test_rollback_with_nothing_to_return_to_is_409(versions: list[str]) -> None:
    status, body = call("POST", "/rollback", {"reason": "oops"})
    assert status == 409 and "nothing promoted yet" in body["error"]["message"]


def test_production_shows_version_and_history(versions: list[str]) -> None:
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"})
    status, body = call("GET", "/models/production")
    assert status == 200
    assert body["production"]["version"] == versions[0]
    assert [h["reason"] for h in body["history"]] == ["one"]


def test_production_before_any_promotion_is_null(versions: list[str]) -> None:
    assert call("GET", "/models/production") == (200, {"production": None, "history": [], "canary": None})


def test_unknown_route_is_404(versions: list[str]) -> None:
    status, body = call("DELETE", f"/models/{versions[0]}")
    assert status == 404 and body["error"]["code"] == "unknown_route"


def test_retried_rollback_with_the_same_idempotency_key_rolls_back_once(stack: Stack, versions: list[str]) -> None:
    for version in versions:
        call("POST", f"/models/{version}/promote", {"reason": "up"})
    first = call("POST", "/rollback", {"reason": "alarm"}, idempotency_key="rollback-0001")
    retry = call("POST", "/rollback", {"reason": "alarm"}, idempotency_key="rollback-0001")
    assert first == retry and first[0] == 200
    assert stack.registry.production_version() == versions[1]
    assert [h.action for h in stack.registry.history()].count("rollback") == 1


def test_a_new_idempotency_key_is_a_new_rollback(stack: Stack, versions: list[str]) -> None:
    for version in versions:
        call("POST", f"/models/{version}/promote", {"reason": "up"})
    call("POST", "/rollback", {"reason": "alarm"}, idempotency_key="rollback-0001")
    call("POST", "/rollback", {"reason": "alarm"}, idempotency_key="rollback-0002")
    assert stack.registry.production_version() == versions[0]


def test_reusing_an_idempotency_key_with_another_reason_is_409(versions: list[str]) -> None:
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"}, idempotency_key="promote-0001")
    status, body = call("POST", f"/models/{versions[0]}/promote", {"reason": "two"}, idempotency_key="promote-0001")
    assert status == 409 and "different reason" in body["error"]["message"]


def test_malformed_idempotency_key_is_400(versions: list[str]) -> None:
    status, body = call("POST", "/rollback", {"reason": "x"}, idempotency_key="short")
    assert status == 400 and "Idempotency-Key" in body["error"]["message"]


@pytest.mark.parametrize("reason", [" ", "\u001f", "\u0085", "\ufeff", "\u00a0\u3000"])
def test_a_reason_without_a_visible_character_is_400(versions: list[str], reason: str) -> None:
    status, body = call("POST", f"/models/{versions[0]}/promote", {"reason": reason})
    assert status == 400 and "reason" in body["error"]["message"]


# ---- canaries ---------------------------------------------------------------------------------


@pytest.fixture
def schedules_canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_CANARY_TARGET_ARN", "arn:aws:lambda:eu-west-1:123456789012:function:skiff-test-events")
    monkeypatch.setenv("SKIFF_CANARY_ROLE_ARN", "arn:aws:iam::123456789012:role/canary")
    monkeypatch.setenv("SKIFF_STACK", "skiff-test")
    handler.canary_scheduler.cache_clear()


def test_a_canary_is_accepted_scheduled_and_shown_beside_production(
    stack: Stack, versions: list[str], schedules_canaries: None
) -> None:
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"})
    status, canary = call("POST", f"/models/{versions[1]}/canary", {"reason": "try", "percent": 10, "minutes": 5})
    assert status == 202 and (canary["version"], canary["percent"], canary["actor"]) == (versions[1], 10, ADMIN)
    (schedule,) = boto3.client("scheduler").list_schedules()["Schedules"]
    assert schedule["Name"].startswith("skiff-test-canary-")
    target = boto3.client("scheduler").get_schedule(Name=schedule["Name"])["Target"]
    assert json.loads(target["Input"])["detail"]["version"] == versions[1]
    production = call("GET", "/models/production")[1]
    assert production["canary"]["version"] == versions[1]
    assert production["production"]["version"] == versions[0]


@pytest.mark.parametrize(("percent", "minutes"), [(0, 5), (60, 5), (10, 0), (10, 10_000)])
def test_a_canary_share_or_length_out_of_range_is_400(
    versions: list[str], schedules_canaries: None, percent: float, minutes: float
) -> None:
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"})
    body = {"reason": "try", "percent": percent, "minutes": minutes}
    assert call("POST", f"/models/{versions[1]}/canary", body)[0] == 400


def test_a_canary_before_any_production_is_409(versions: list[str], schedules_canaries: None) -> None:
    status, body = call("POST", f"/models/{versions[0]}/canary", {"reason": "try", "percent": 10, "minutes": 5})
    assert status == 409 and "production version" in body["error"]["message"]


def test_a_canary_on_a_stack_without_schedules_is_409_and_leaves_nothing_running(
    stack: Stack, versions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKIFF_CANARY_TARGET_ARN", raising=False)
    handler.canary_scheduler.cache_clear()
    call("POST", f"/models/{versions[0]}/promote", {"reason": "one"})
    status, body = call("POST", f"/models/{versions[1]}/canary", {"reason": "try", "percent": 10, "minutes": 5})
    assert status == 409 and "schedules canaries" in body["error"]["message"]
    assert stack.registry.canary() is None


def test_aborting_without_a_running_canary_is_409(versions: list[str]) -> None:
    status, body = call("POST", "/canary/abort", {"reason": "stop"})
    assert status == 409 and "running canary" in body["error"]["message"]
