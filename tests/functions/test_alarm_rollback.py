from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from functions.alarm_rollback import handler
from skiff.model.artifact import MODEL_INT8
from skiff.registry.artifacts import parse_s3_uri
from skiff.registry.auto_rollback import rollback_on_alarm
from tests.aws_fixtures import Subscriber
from tests.events import captured
from tests.functions.conftest import Stack
from tests.functions.test_inference import Context


@pytest.fixture(autouse=True)
def fresh_container() -> None:
    handler.registry.cache_clear()


@pytest.fixture
def promoted_twice(stack: Stack) -> list[str]:
    versions = [
        stack.registry.register(
            artifact_uri="s3://b/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage={}
        ).version
        for _ in range(2)
    ]
    for version in versions:
        stack.registry.promote(version, "up")
    return versions


def alarm_event(state: str = "ALARM") -> dict:
    event = captured("cloudwatch-alarm-state-change.json")
    event["detail"]["alarmName"] = "skiff-dev-inference-5xx"
    event["detail"]["state"]["value"] = state
    return event


def test_alarm_soon_after_a_promotion_rolls_back(stack: Stack, promoted_twice: list[str]) -> None:
    outcome = handler.lambda_handler(alarm_event(), Context())
    assert outcome["status"] == "rolled-back" and outcome["version"] == promoted_twice[0]
    change = stack.registry.history(limit=1)[0]
    assert change.actor == "alarm:skiff-dev-inference-5xx" and "after" in change.reason


def test_repeated_alarm_event_rolls_back_only_once(stack: Stack, promoted_twice: list[str]) -> None:
    handler.lambda_handler(alarm_event(), Context())
    again = handler.lambda_handler(alarm_event(), Context())
    assert again["status"] == "skipped"
    assert stack.registry.production_version() == promoted_twice[0]


def test_ok_state_does_nothing(stack: Stack, promoted_twice: list[str]) -> None:
    assert handler.lambda_handler(alarm_event("OK"), Context())["status"] == "skipped"
    assert stack.registry.production_version() == promoted_twice[1]


def test_alarm_long_after_the_promotion_does_not_roll_back(stack: Stack, promoted_twice: list[str]) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    outcome = rollback_on_alarm(stack.registry, "skiff-dev-inference-5xx", "ALARM", 3600, now=later)
    assert outcome.status == "skipped" and "outside the 3600s window" in outcome.reason
    assert stack.registry.production_version() == promoted_twice[1]


def test_alarm_with_only_one_version_cannot_roll_back(stack: Stack) -> None:
    version = stack.registry.register(
        artifact_uri="s3://b/m/", manifest_sha256="ab" * 32, metrics={}, lineage={}
    ).version
    stack.registry.promote(version, "first")
    outcome = handler.lambda_handler(alarm_event(), Context())
    assert outcome["status"] == "skipped" and "none before" in outcome["reason"]


# ---- production that cannot be loaded ------------------------------------------------------


@pytest.fixture
def unloadable_production(stack: Stack, small_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two published versions; the second serves, and then its int8 model disappears from S3."""
    versions = [stack.publish(small_artifact) for _ in range(2)]
    for version in versions:
        stack.registry.promote(version, "up")
    bucket, prefix = parse_s3_uri(stack.registry.get(versions[1]).artifact_uri or "")
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"{prefix}{MODEL_INT8}")
    monkeypatch.setenv("SKIFF_UNLOADABLE_ALARM", UNLOADABLE)
    return versions


UNLOADABLE = "skiff-dev-production-unloadable"


def unloadable_alarm() -> dict:
    event = alarm_event()
    event["detail"]["alarmName"] = UNLOADABLE
    return event


def test_unloadable_production_is_rolled_back_whenever_the_alarm_fires(
    stack: Stack, unloadable_production: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIFF_AUTO_ROLLBACK_WINDOW_SECONDS", "0")  # the promotion window does not apply
    outcome = handler.lambda_handler(unloadable_alarm(), Context())
    assert outcome["status"] == "rolled-back" and outcome["version"] == unloadable_production[0]
    assert "cannot be loaded" in stack.registry.history(limit=1)[0].reason


def test_the_unloadable_alarm_rolls_back_nothing_when_production_loads(
    stack: Stack, unloadable_production: list[str]
) -> None:
    handler.lambda_handler(unloadable_alarm(), Context())
    again = handler.lambda_handler(unloadable_alarm(), Context())  # a repeated event: v1 loads fine
    assert again["status"] == "skipped" and "loads" in again["reason"]
    assert stack.registry.production_version() == unloadable_production[0]


def test_an_automatic_rollback_is_notified_with_the_alarm_and_version(
    stack: Stack, promoted_twice: list[str], subscriber: Subscriber
) -> None:
    handler.notifier.cache_clear()
    handler.lambda_handler(alarm_event(), Context())
    (notification,) = subscriber.received()
    assert (
        notification["Subject"]
        == f"[skiff-test] production rolled back to {promoted_twice[0]} by alarm skiff-dev-inference-5xx"
    )
    message = notification["Message"]
    assert (message["event"], message["version"], message["alarm"]) == (
        "rolled-back",
        promoted_twice[0],
        "skiff-dev-inference-5xx",
    )
    assert notification["MessageAttributes"]["event"]["Value"] == "rolled-back"


def test_an_alarm_that_rolls_nothing_back_notifies_nobody(
    stack: Stack, promoted_twice: list[str], subscriber: Subscriber
) -> None:
    handler.notifier.cache_clear()
    handler.lambda_handler(alarm_event("OK"), Context())
    assert subscriber.received() == []


def test_an_alarm_during_a_canary_aborts_the_canary_and_leaves_production(
    stack: Stack, promoted_twice: list[str], subscriber: Subscriber
) -> None:
    candidate = stack.registry.register(
        artifact_uri="s3://b/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage={}
    ).version
    stack.registry.start_canary(candidate, 10, 5, "try it")
    handler.notifier.cache_clear()
    outcome = handler.lambda_handler(alarm_event(), Context())
    assert (outcome["status"], outcome["version"]) == ("canary-aborted", candidate)
    assert stack.registry.canary() is None
    assert stack.registry.production_version() == promoted_twice[1]  # not rolled back
    (notification,) = subscriber.received()
    assert (notification["Message"]["event"], notification["Message"]["version"]) == ("canary-aborted", candidate)
