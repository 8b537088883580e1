"""Canary promotion: a version serves a share of requests for a while, then is promoted or
aborted by itself — what CodeDeploy does for Lambda, without CodeDeploy.

Starting a canary records it in the registry (:meth:`Registry.start_canary`), moves the
inference alias's routing weights (skiff.serve.lambda_alias follows the canary like
production), and schedules a one-time EventBridge Scheduler invocation of the completion
function at the canary's end (``Skiff Canary Due``). Then :func:`decide` looks at the stack's
serving alarms, and at the canary's own invocations: any alarm in ALARM, or more than
``max_error_rate`` of the canary's published version's invocations failing (Lambda's own
``Errors`` per ``ExecutedVersion`` through the alias: exceptions, timeouts and out-of-memory
alike), aborts the canary (production serves everything again); otherwise it is promoted. The
function-wide alarms alone would miss a small canary that fails: at 2 % of requests even total
failure stays under a 5 % 5xx-rate alarm. A serving alarm that fires meanwhile aborts it at once
(skiff.registry.auto_rollback), and so do the alarms on the canary's own version's error rate and
p99 duration that the alias keeps while it runs (skiff.serve.canary_alarms); one of those in ALARM
at the end aborts it too. Any change to production (a promotion or rollback by hand) ends it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skiff import settings as env
from skiff.aws import LazyClient
from skiff.errors import ConflictError
from skiff.notify import Notice
from skiff.registry.table import Canary, Registry
from skiff.serve.canary_alarms import version_dimensions
from skiff.serve.lambda_alias import InferenceAlias, alias_from_env

CANARY_DUE = "Skiff Canary Due"
EVENT_SOURCE = "skiff.registry"
EARLY_TOLERANCE_SECONDS = 5  # Scheduler fires within a minute of the time; earlier than this is not due


@dataclass(frozen=True)
class CanarySettings:
    stack: str
    target_arn: str  # the function that decides at the end (the completion function)
    role_arn: str  # what EventBridge Scheduler assumes to invoke it
    alarms: tuple[str, ...] = ()  # serving alarms: one in ALARM at the end aborts the canary
    max_error_rate: float = 0.05  # of the canary's own invocations (the 5xx-rate alarm's default)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CanarySettings | None:
        """None unless the stack schedules canaries (SKIFF_CANARY_TARGET_ARN set)."""
        e = os.environ if environ is None else environ
        if not e.get("SKIFF_CANARY_TARGET_ARN"):
            return None
        return cls(
            stack=e.get("SKIFF_STACK", ""),
            target_arn=e["SKIFF_CANARY_TARGET_ARN"],
            role_arn=e.get("SKIFF_CANARY_ROLE_ARN", ""),
            alarms=tuple(a for a in (e.get("SKIFF_SERVING_ALARMS") or "").split(",") if a),
            max_error_rate=env.number("SKIFF_CANARY_MAX_ERROR_RATE", 0.05, e),
        )


@dataclass(frozen=True)
class CanaryOutcome:
    state: str  # "promoted", "aborted", "ignored"
    version: str | None = None
    reason: str | None = None

    def notice(self) -> Notice | None:
        if self.state not in ("promoted", "aborted"):
            return None
        what = (
            f"canary {self.version} promoted to production"
            if self.state == "promoted"
            else f"canary {self.version} aborted; production unchanged"
        )
        return Notice(f"canary-{self.state}", what, {"version": self.version, "reason": self.reason})


def due_event(stack: str, canary: Canary) -> dict[str, Any]:
    """What the schedule hands the completion function: an EventBridge-shaped event."""
    return {
        "version": "0",
        "source": EVENT_SOURCE,
        "detail-type": CANARY_DUE,
        "detail": {"stack": stack, "version": canary.version, "until": canary.until},
    }


class CanaryScheduler:
    scheduler = LazyClient("scheduler")
    cloudwatch = LazyClient("cloudwatch")

    def __init__(
        self,
        settings: CanarySettings,
        scheduler: Any = None,
        cloudwatch: Any = None,
        alias: InferenceAlias | None = None,
    ) -> None:
        """``alias``: the inference alias the canary is served through (None: the stack serves
        without published versions, and only the alarms judge)."""
        self.settings = settings
        self.scheduler, self.cloudwatch = scheduler, cloudwatch
        self.alias = alias

    def schedule_name(self, canary: Canary) -> str:
        """A new name each time (not one per version: the schedule of an aborted canary stays until
        it fires, then finds nothing to decide); at most 64 characters, as Scheduler allows."""
        return f"{self.settings.stack}-canary-{canary.version[-4:]}-{secrets.token_hex(5)}"  # 40 + 23 at most

    def schedule(self, canary: Canary) -> str:
        """A one-time schedule at the canary's end that deletes itself once it ran; its name."""
        at = datetime.fromisoformat(canary.until).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        name = self.schedule_name(canary)
        self.scheduler.create_schedule(
            Name=name,
            ScheduleExpression=f"at({at})",
            ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"},
            ActionAfterCompletion="DELETE",
            Target={
                "Arn": self.settings.target_arn,
                "RoleArn": self.settings.role_arn,
                "Input": json.dumps(due_event(self.settings.stack, canary)),
            },
        )
        return name

    def watched_alarms(self) -> list[str]:
        """The serving alarms, and the canary's own ones where the alias keeps them."""
        own = self.alias.canary_alarms if self.alias is not None else None
        return [*self.settings.alarms, *(own.settings.names if own is not None else ())]

    def breached(self) -> list[str]:
        """The watched alarms in ALARM now."""
        alarms = self.watched_alarms()
        if not alarms:
            return []
        described = self.cloudwatch.describe_alarms(AlarmNames=alarms)
        return sorted(a["AlarmName"] for a in described.get("MetricAlarms", []) if a["StateValue"] == "ALARM")

    def own_invocations(self, canary: Canary, now: datetime) -> tuple[str, int, int] | None:
        """The canary's published function version, its invocations through the alias since the
        canary started, and how many of them failed; None when no published version of the
        alias serves the canary's model (a stack without published versions, or not moved yet)."""
        if self.alias is None:
            return None
        _, weights, _ = self.alias.routing()
        serving = [v for v in weights if self.alias.bound_version(v) == canary.version]
        if not serving:
            return None
        dimensions = version_dimensions(self.alias.settings.function_name, self.alias.settings.alias, serving[0])
        start = datetime.fromisoformat(canary.started_at).replace(second=0, microsecond=0)

        def total(metric: str) -> int:
            # One-minute sums: a canary lasts at most a day, CloudWatch's 1,440 points per call.
            answer = self.cloudwatch.get_metric_statistics(
                Namespace="AWS/Lambda",
                MetricName=metric,
                Dimensions=dimensions,
                StartTime=start,
                EndTime=now,
                Period=60,
                Statistics=["Sum"],
            )
            return round(sum(point["Sum"] for point in answer.get("Datapoints", [])))

        return serving[0], total("Invocations"), total("Errors")

    def decide(
        self, registry: Registry, version: str, until: str | None = None, now: datetime | None = None
    ) -> CanaryOutcome:
        """At the canary's end: promote it, or abort it when a serving alarm is in ALARM or too
        many of its own invocations failed. A schedule names the end it was made for
        (``until``): an earlier canary's is ignored."""
        running = registry.canary()
        if running is None or running.version != version or (until is not None and until != running.until):
            return CanaryOutcome("ignored", version, "no such canary is running (it ended already)")
        now = now or datetime.now(UTC)
        left = (datetime.fromisoformat(running.until) - now).total_seconds()
        if left > EARLY_TOLERANCE_SECONDS:
            return CanaryOutcome("ignored", version, f"the canary runs {left:.0f}s more")
        breached = self.breached()
        if breached:
            reason = f"alarms in ALARM at the end of the canary: {', '.join(breached)}"
            ended = registry.abort_canary(reason, actor="canary", version=version)
            return CanaryOutcome("aborted" if ended else "ignored", version, reason)
        own = self.own_invocations(running, now)
        if own is None:
            judged = "its own invocations not judged (no published version serves it)"
        else:
            function_version, invocations, errors = own
            share = errors / invocations if invocations else 0.0
            judged = f"{errors} of its {invocations} invocations failed (function version {function_version})"
            if share > self.settings.max_error_rate:
                reason = f"{judged}: more than the {self.settings.max_error_rate:.0%} allowed"
                ended = registry.abort_canary(reason, actor="canary", version=version)
                return CanaryOutcome("aborted" if ended else "ignored", version, reason)
        reason = f"canary of {running.percent:g} % since {running.started_at}: no serving alarm in ALARM, {judged}"
        try:
            registry.promote(version, reason, actor="canary", canary=True)
        except ConflictError as exc:
            return CanaryOutcome("ignored", version, str(exc))
        return CanaryOutcome("promoted", version, reason)


def canary_scheduler_from_env() -> CanaryScheduler | None:
    settings = CanarySettings.from_env()
    return CanaryScheduler(settings, alias=alias_from_env()) if settings is not None else None
