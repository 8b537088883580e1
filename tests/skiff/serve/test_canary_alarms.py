"""The alarms on a running canary's own function version, kept in step with the inference alias
(moto's Lambda and CloudWatch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from skiff.registry.auto_rollback import rollback_on_alarm
from skiff.registry.table import Registry, create_table
from skiff.serve.canary import CanaryScheduler, CanarySettings
from skiff.serve.canary_alarms import CanaryAlarms, CanaryAlarmSettings
from skiff.serve.lambda_alias import AliasSettings, InferenceAlias
from tests.aws_fixtures import create_inference_function

TABLE, FUNCTION, STACK = "skiff-registry-test", "skiff-test-inference", "skiff-test"
ERRORS, LATENCY = "skiff-test-canary-errors", "skiff-test-canary-p99-latency"
WATCH = CanaryAlarmSettings(STACK, max_error_rate=0.02, max_p99_latency_ms=800)


@pytest.fixture
def registry(aws: None) -> Registry:
    create_table(TABLE)
    return Registry(TABLE)


@pytest.fixture
def alias(aws: None) -> InferenceAlias:
    create_inference_function(FUNCTION, TABLE)
    return InferenceAlias(
        AliasSettings(FUNCTION, "live", wait_seconds=1), sleep=lambda _: None, canary_alarms=CanaryAlarms(WATCH)
    )


def candidate(registry: Registry) -> str:
    return registry.register(artifact_uri="s3://a/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage={}).version


@pytest.fixture
def canary(registry: Registry, alias: InferenceAlias) -> tuple[str, str]:
    """A canary served through the alias: its model version and its published function version."""
    registry.promote(candidate(registry), "first")
    alias.follow(registry)
    version = candidate(registry)
    registry.start_canary(version, 2, 5, "try it on a fiftieth")
    alias.follow(registry)
    (function_version,) = alias.routing()[1]
    return version, function_version


def alarms() -> dict[str, dict[str, Any]]:
    described = boto3.client("cloudwatch").describe_alarms(AlarmNames=[ERRORS, LATENCY])["MetricAlarms"]
    return {a["AlarmName"]: a for a in described}


def canary_dimensions(function_version: str) -> list[dict[str, str]]:
    return [
        {"Name": "FunctionName", "Value": FUNCTION},
        {"Name": "Resource", "Value": f"{FUNCTION}:live"},
        {"Name": "ExecutedVersion", "Value": function_version},
    ]


def test_a_canarys_error_rate_is_watched_on_its_own_function_version(canary: tuple[str, str]) -> None:
    _, function_version = canary
    errors = alarms()[ERRORS]
    queries = {q["Id"]: q for q in errors["Metrics"]}
    assert queries["rate"]["Expression"] == "IF(invocations > 0, errors / invocations, 0)"
    for query_id, metric in (("errors", "Errors"), ("invocations", "Invocations")):
        watched = queries[query_id]["MetricStat"]["Metric"]
        assert (watched["Namespace"], watched["MetricName"]) == ("AWS/Lambda", metric)
        assert watched["Dimensions"] == canary_dimensions(function_version)
    assert (errors["Threshold"], errors["ComparisonOperator"]) == (0.02, "GreaterThanThreshold")


def test_a_canarys_p99_duration_is_watched_on_its_own_function_version(canary: tuple[str, str]) -> None:
    _, function_version = canary
    latency = alarms()[LATENCY]
    assert (latency["Namespace"], latency["MetricName"], latency["ExtendedStatistic"]) == (
        "AWS/Lambda",
        "Duration",
        "p99",
    )
    assert latency["Dimensions"] == canary_dimensions(function_version)
    assert latency["Threshold"] == 800


def test_following_the_same_canary_again_leaves_an_alarm_in_alarm_as_it_is(
    registry: Registry, alias: InferenceAlias, canary: tuple[str, str]
) -> None:
    boto3.client("cloudwatch").set_alarm_state(AlarmName=ERRORS, StateValue="ALARM", StateReason="failing")
    alias.follow(registry)
    assert alarms()[ERRORS]["StateValue"] == "ALARM"


def test_the_canary_alarms_are_deleted_once_the_canary_is_promoted(
    registry: Registry, alias: InferenceAlias, canary: tuple[str, str]
) -> None:
    version, _ = canary
    registry.promote(version, "the canary held", canary=True)
    assert alias.follow(registry).state == "moved"
    assert alarms() == {}


def test_the_canary_alarms_are_deleted_once_the_canary_is_aborted(
    registry: Registry, alias: InferenceAlias, canary: tuple[str, str]
) -> None:
    registry.abort_canary("changed my mind", actor="test")
    alias.follow(registry)
    assert alarms() == {}


def test_no_canary_alarm_exists_without_a_canary(registry: Registry, alias: InferenceAlias) -> None:
    registry.promote(candidate(registry), "first")
    alias.follow(registry)
    assert alarms() == {}


def test_a_canary_alarm_in_alarm_at_the_end_aborts_the_canary(
    registry: Registry, alias: InferenceAlias, canary: tuple[str, str]
) -> None:
    version, _ = canary
    boto3.client("cloudwatch").set_alarm_state(AlarmName=LATENCY, StateValue="ALARM", StateReason="slow")
    settings = CanarySettings(STACK, "arn:aws:lambda:eu-west-1:123456789012:function:f", "arn:aws:iam::1:role/r")
    outcome = CanaryScheduler(settings, alias=alias).decide(
        registry, version, now=datetime.now(UTC) + timedelta(hours=1)
    )
    assert (outcome.state, outcome.reason) == ("aborted", f"alarms in ALARM at the end of the canary: {LATENCY}")


def test_a_canary_alarm_entering_alarm_aborts_the_running_canary(
    registry: Registry, alias: InferenceAlias, canary: tuple[str, str]
) -> None:
    version, _ = canary
    production = registry.production_version()
    outcome = rollback_on_alarm(registry, ERRORS, "ALARM", window_seconds=3600)
    assert (outcome.status, outcome.version) == ("canary-aborted", version)
    assert registry.canary() is None and registry.production_version() == production


class RefusingCloudWatch:
    def describe_alarms(self, **_: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DescribeAlarms")


def test_an_alias_move_succeeds_when_the_canary_alarms_cannot_be_made(
    registry: Registry, aws: None, caplog: pytest.LogCaptureFixture
) -> None:
    create_inference_function(FUNCTION, TABLE)
    refused = CanaryAlarms(WATCH, cloudwatch=RefusingCloudWatch())
    alias = InferenceAlias(AliasSettings(FUNCTION, "live", wait_seconds=1), sleep=lambda _: None, canary_alarms=refused)
    registry.promote(candidate(registry), "first")
    alias.follow(registry)
    registry.start_canary(candidate(registry), 2, 5, "try it")
    assert alias.follow(registry).state == "moved"
    assert "canary alarms did not follow the alias" in caplog.text


def test_canary_alarms_are_off_unless_the_stack_asks_for_them() -> None:
    assert CanaryAlarmSettings.from_env({"SKIFF_STACK": STACK}) is None


def test_canary_alarm_names_and_limits_come_from_the_environment() -> None:
    settings = CanaryAlarmSettings.from_env(
        {
            "SKIFF_CANARY_ALARMS": "true",
            "SKIFF_STACK": STACK,
            "SKIFF_CANARY_MAX_ERROR_RATE": "0.01",
            "SKIFF_CANARY_MAX_P99_MS": "250",
        }
    )
    assert settings is not None
    assert (settings.names, settings.max_error_rate, settings.max_p99_latency_ms) == ((ERRORS, LATENCY), 0.01, 250)
