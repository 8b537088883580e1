"""A canary's schedule and its verdict, against moto's EventBridge Scheduler and CloudWatch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from skiff.registry.table import Registry, create_table
from skiff.serve.canary import CANARY_DUE, CanaryScheduler, CanarySettings
from skiff.serve.lambda_alias import AliasSettings, InferenceAlias
from tests.aws_fixtures import create_inference_function

TABLE, ALARM = "skiff-registry-test", "skiff-test-inference-5xx-rate"
SETTINGS = CanarySettings(
    stack="skiff-test",
    target_arn="arn:aws:lambda:eu-west-1:123456789012:function:skiff-test-training-events",
    role_arn="arn:aws:iam::123456789012:role/canary",
    alarms=(ALARM,),
)


@pytest.fixture
def registry(aws: None) -> Registry:
    create_table(TABLE)
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName=ALARM,
        Namespace="AWS/ApiGateway",
        MetricName="5xx",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0.05,
        ComparisonOperator="GreaterThanThreshold",
    )
    return Registry(TABLE)


def candidate(registry: Registry) -> str:
    return registry.register(artifact_uri="s3://a/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage={}).version


@pytest.fixture
def running(registry: Registry) -> str:
    registry.promote(candidate(registry), "first")
    version = candidate(registry)
    registry.start_canary(version, 10, 5, "try it on a tenth")
    return version


def ended() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=6)


def test_the_end_of_a_canary_is_a_one_time_schedule_on_the_completion_function(
    registry: Registry, running: str
) -> None:
    canary = registry.canary()
    assert canary is not None
    name = CanaryScheduler(SETTINGS).schedule(canary)
    schedule = boto3.client("scheduler").get_schedule(Name=name)
    at = datetime.fromisoformat(canary.until).strftime("%Y-%m-%dT%H:%M:%S")
    assert schedule["ScheduleExpression"] == f"at({at})" and schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["ActionAfterCompletion"] == "DELETE"
    assert (schedule["Target"]["Arn"], schedule["Target"]["RoleArn"]) == (SETTINGS.target_arn, SETTINGS.role_arn)
    event = json.loads(schedule["Target"]["Input"])
    assert (event["detail-type"], event["detail"]["version"]) == (CANARY_DUE, running)


def test_a_canary_with_no_serving_alarm_in_alarm_is_promoted(registry: Registry, running: str) -> None:
    outcome = CanaryScheduler(SETTINGS).decide(registry, running, now=ended())
    assert outcome.state == "promoted"
    assert registry.production_version() == running and registry.canary() is None
    assert registry.history(limit=1)[0].actor == "canary"


def test_a_canary_with_a_serving_alarm_in_alarm_is_aborted(registry: Registry, running: str) -> None:
    production = registry.production_version()
    boto3.client("cloudwatch").set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="test")
    outcome = CanaryScheduler(SETTINGS).decide(registry, running, now=ended())
    assert (outcome.state, outcome.reason) == ("aborted", f"alarms in ALARM at the end of the canary: {ALARM}")
    assert registry.production_version() == production and registry.canary() is None


def test_a_canary_is_not_decided_before_its_end(registry: Registry, running: str) -> None:
    outcome = CanaryScheduler(SETTINGS).decide(registry, running)
    assert outcome.state == "ignored" and "runs" in (outcome.reason or "")
    assert registry.canary() is not None


def test_a_canary_that_ended_already_is_left_alone(registry: Registry, running: str) -> None:
    registry.abort_canary("by hand")
    assert CanaryScheduler(SETTINGS).decide(registry, running, now=ended()).state == "ignored"
    assert registry.production_version() != running


def test_the_schedule_of_an_earlier_canary_of_the_same_version_decides_nothing(
    registry: Registry, running: str
) -> None:
    first = registry.canary()
    assert first is not None
    registry.abort_canary("by hand")
    second = registry.start_canary(running, 10, 5, "again")
    scheduler = CanaryScheduler(SETTINGS)
    assert scheduler.schedule(first) != scheduler.schedule(second)  # both exist at once
    outcome = scheduler.decide(registry, running, until="2000-01-01T00:00:00+00:00", now=ended())
    assert outcome.state == "ignored" and registry.canary() == second


def test_a_schedule_name_fits_schedulers_limit_with_the_longest_stack_prefix(registry: Registry, running: str) -> None:
    from infra.settings import MAX_PREFIX

    canary = registry.canary()
    assert canary is not None
    longest = CanaryScheduler(CanarySettings("s" * MAX_PREFIX, SETTINGS.target_arn, SETTINGS.role_arn))
    assert len(longest.schedule_name(canary)) <= 64


FUNCTION = "skiff-test-inference"


@pytest.fixture
def alias(aws: None) -> InferenceAlias:
    create_inference_function(FUNCTION, TABLE)
    return InferenceAlias(AliasSettings(FUNCTION, "live", wait_seconds=1), sleep=lambda _: None)


@pytest.fixture
def served(registry: Registry, alias: InferenceAlias) -> tuple[str, str, str]:
    """A canary served through the alias: its model version, then the published function
    versions of production and of the canary."""
    registry.promote(candidate(registry), "first")
    production = alias.follow(registry).function_version
    version = candidate(registry)
    registry.start_canary(version, 2, 5, "try it on a fiftieth")
    alias.follow(registry)
    (canary_function,) = alias.routing()[1]
    assert production is not None
    return version, production, canary_function


def lambda_ran(function_version: str, invocations: int, errors: int) -> None:
    """What Lambda records for the invocations of one published version through the alias."""
    dimensions = [
        {"Name": "FunctionName", "Value": FUNCTION},
        {"Name": "Resource", "Value": f"{FUNCTION}:live"},
        {"Name": "ExecutedVersion", "Value": function_version},
    ]
    boto3.client("cloudwatch").put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {"MetricName": name, "Dimensions": dimensions, "Timestamp": datetime.now(UTC), "Value": value}
            for name, value in (("Invocations", invocations), ("Errors", errors))
        ],
    )


def test_a_small_canary_whose_own_invocations_fail_is_aborted_with_no_alarm_in_alarm(
    registry: Registry, alias: InferenceAlias, served: tuple[str, str, str]
) -> None:
    version, production, canary_function = served
    lambda_ran(canary_function, invocations=40, errors=12)  # 2 % of traffic: the 5xx-rate alarm stays OK
    outcome = CanaryScheduler(SETTINGS, alias=alias).decide(registry, version, now=ended())
    assert outcome.state == "aborted"
    assert outcome.reason == (
        f"12 of its 40 invocations failed (function version {canary_function}): more than the 5% allowed"
    )
    assert registry.production_version() != version and registry.canary() is None


def test_a_canary_whose_own_errors_stay_within_the_limit_is_promoted(
    registry: Registry, alias: InferenceAlias, served: tuple[str, str, str]
) -> None:
    version, _, canary_function = served
    lambda_ran(canary_function, invocations=100, errors=1)
    outcome = CanaryScheduler(SETTINGS, alias=alias).decide(registry, version, now=ended())
    assert outcome.state == "promoted" and registry.production_version() == version
    assert "1 of its 100 invocations failed" in (outcome.reason or "")


def test_production_versions_failures_do_not_count_against_the_canary(
    registry: Registry, alias: InferenceAlias, served: tuple[str, str, str]
) -> None:
    version, production, canary_function = served
    lambda_ran(production, invocations=100, errors=100)
    lambda_ran(canary_function, invocations=10, errors=0)
    assert CanaryScheduler(SETTINGS, alias=alias).decide(registry, version, now=ended()).state == "promoted"


def test_a_canary_that_no_published_version_serves_is_judged_by_the_alarms_alone(
    registry: Registry, running: str
) -> None:
    outcome = CanaryScheduler(SETTINGS).decide(registry, running, now=ended())
    assert outcome.state == "promoted"
    assert "its own invocations not judged (no published version serves it)" in (outcome.reason or "")


def test_the_error_limit_comes_from_the_environment() -> None:
    settings = CanarySettings.from_env(
        {"SKIFF_CANARY_TARGET_ARN": SETTINGS.target_arn, "SKIFF_CANARY_MAX_ERROR_RATE": "0.01"}
    )
    assert settings is not None and settings.max_error_rate == 0.01
