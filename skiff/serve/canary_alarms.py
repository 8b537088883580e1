"""Alarms on a running canary's own published function version, so that a canary that fails or
slows down is aborted within minutes, not only at its end.

The stack's serving alarms watch the whole function: a canary at 2 % that fails every request
keeps the stack's 5xx rate under a 5 % alarm, and its latency disappears in production's p99.
While a canary runs, two alarms watch Lambda's own metrics of the version the alias routes the
canary's share to (dimensions ``FunctionName``, ``Resource`` = ``function:alias`` and
``ExecutedVersion``): its error rate (exceptions, timeouts and out-of-memory alike) and its p99
duration, with the serving alarms' thresholds and shape. Their names are fixed per stack (one
canary runs at a time), so the stack's rule sends their state changes to the alarm rollback
function like the serving alarms', which aborts the canary; and one in ALARM at the canary's
end aborts it there (skiff.serve.canary).

The inference alias keeps them in step with its routing (:meth:`CanaryAlarms.follow`, called
whenever it follows the registry): put while a canary's version takes a share, deleted once
none does (a promoted canary's version then serves everything, which the serving alarms
watch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skiff import settings as env
from skiff.aws import LazyClient

log = logging.getLogger(__name__)

ERRORS, LATENCY = "canary-errors", "canary-p99-latency"


def canary_alarm_names(stack: str) -> tuple[str, str]:
    """The two alarms' names for a stack (infra grants and routes exactly these)."""
    return f"{stack}-{ERRORS}", f"{stack}-{LATENCY}"


@dataclass(frozen=True)
class CanaryAlarmSettings:
    stack: str
    max_error_rate: float = 0.05  # the stack's 5xx-rate alarm threshold
    max_p99_latency_ms: float = 1000.0  # the stack's p99 latency alarm threshold
    period_seconds: int = 60
    evaluation_periods: int = 3
    datapoints_to_alarm: int = 2

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CanaryAlarmSettings | None:
        """None unless the stack watches canaries (SKIFF_CANARY_ALARMS=true and SKIFF_STACK set)."""
        e = os.environ if environ is None else environ
        if not env.boolean("SKIFF_CANARY_ALARMS", False, e):
            return None
        return cls(
            stack=env.require("SKIFF_STACK", e),
            max_error_rate=env.number("SKIFF_CANARY_MAX_ERROR_RATE", 0.05, e),
            max_p99_latency_ms=env.number("SKIFF_CANARY_MAX_P99_MS", 1000.0, e),
        )

    @property
    def names(self) -> tuple[str, str]:
        return canary_alarm_names(self.stack)


def version_dimensions(function_name: str, alias: str, function_version: str) -> list[dict[str, str]]:
    """Lambda's metric dimensions for invocations through ``alias`` that ran ``function_version``."""
    return [
        {"Name": "FunctionName", "Value": function_name},
        {"Name": "Resource", "Value": f"{function_name}:{alias}"},
        {"Name": "ExecutedVersion", "Value": function_version},
    ]


class CanaryAlarms:
    cloudwatch = LazyClient("cloudwatch")

    def __init__(self, settings: CanaryAlarmSettings, cloudwatch: Any = None) -> None:
        self.settings = settings
        self.cloudwatch = cloudwatch

    def follow(self, function_name: str, alias: str, canary_function_version: str | None) -> None:
        """Watch the published version a canary's share goes to; with none, watch nothing. Never
        raises: the alias has moved already, and the canary is judged at its end either way."""
        try:
            if canary_function_version is None:
                self.unwatch()
            else:
                self.watch(function_name, alias, canary_function_version)
        except (ClientError, BotoCoreError) as exc:
            log.error("canary alarms did not follow the alias (%s): %s", canary_function_version, exc)

    def watched(self) -> dict[str, str | None]:
        """The canary alarms that exist, each with the function version it watches."""
        described = self.cloudwatch.describe_alarms(AlarmNames=list(self.settings.names)).get("MetricAlarms", [])
        return {alarm["AlarmName"]: _executed_version(alarm) for alarm in described}

    def watch(self, function_name: str, alias: str, function_version: str) -> None:
        """Put both alarms on ``function_version``, unless they watch it already: an alarm put
        again would only be evaluated anew, and an alarm already in ALARM must stay so."""
        s = self.settings
        if self.watched() == dict.fromkeys(s.names, function_version):
            return
        dimensions = version_dimensions(function_name, alias, function_version)
        errors_name, latency_name = s.names
        shape = {
            "EvaluationPeriods": s.evaluation_periods,
            "DatapointsToAlarm": s.datapoints_to_alarm,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",  # a canary nobody calls has not failed
        }

        def stat(query_id: str, metric: str) -> dict[str, Any]:
            return {
                "Id": query_id,
                "ReturnData": False,
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/Lambda", "MetricName": metric, "Dimensions": dimensions},
                    "Period": s.period_seconds,
                    "Stat": "Sum",
                },
            }

        self.cloudwatch.put_metric_alarm(
            AlarmName=errors_name,
            AlarmDescription=(
                f"Share of the canary's invocations that failed (function version {function_version} through "
                f"{alias}); entering ALARM aborts the canary"
            ),
            Metrics=[
                stat("errors", "Errors"),
                stat("invocations", "Invocations"),
                {
                    "Id": "rate",
                    "Expression": "IF(invocations > 0, errors / invocations, 0)",
                    "Label": "canary error rate",
                    "ReturnData": True,
                },
            ],
            Threshold=s.max_error_rate,
            **shape,
        )
        self.cloudwatch.put_metric_alarm(
            AlarmName=latency_name,
            AlarmDescription=(
                f"p99 duration (ms) of the canary's function version {function_version} through {alias}; "
                "entering ALARM aborts the canary"
            ),
            Namespace="AWS/Lambda",
            MetricName="Duration",
            Dimensions=dimensions,
            ExtendedStatistic="p99",
            Period=s.period_seconds,
            Threshold=s.max_p99_latency_ms,
            **shape,
        )

    def unwatch(self) -> None:
        """Delete whichever of the two alarms exists (DeleteAlarms fails on a missing name)."""
        existing = sorted(self.watched())
        if existing:
            self.cloudwatch.delete_alarms(AlarmNames=existing)


def _executed_version(alarm: Mapping[str, Any]) -> str | None:
    """The ExecutedVersion an alarm's metric (or its metric math's first metric) is filtered by."""
    dimensions = alarm.get("Dimensions") or next(
        (q["MetricStat"]["Metric"].get("Dimensions", []) for q in alarm.get("Metrics", []) if "MetricStat" in q), []
    )
    return next((d["Value"] for d in dimensions if d["Name"] == "ExecutedVersion"), None)


def canary_alarms_from_env() -> CanaryAlarms | None:
    settings = CanaryAlarmSettings.from_env()
    return CanaryAlarms(settings) if settings is not None else None
