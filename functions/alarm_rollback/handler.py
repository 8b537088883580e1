"""Alarm rollback Lambda: EventBridge "CloudWatch Alarm State Change" for the serving alarms."""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from skiff import settings
from skiff.errors import ArtifactError
from skiff.model.artifact import SERVING_FILES
from skiff.notify import Notifier, notifier_from_env
from skiff.registry.artifacts import ArtifactStore
from skiff.registry.auto_rollback import rollback_on_alarm
from skiff.registry.table import ModelVersion, Registry
from skiff.serve.gpu_endpoint import endpoint_from_env, follow_production
from skiff.serve.lambda_alias import alias_from_env, follow_alias

logger = Logger(service="skiff-alarm-rollback")
metrics = Metrics(namespace="Skiff", service="alarm-rollback")
tracer = Tracer(service="skiff-alarm-rollback")  # X-Ray, when the function runs with active tracing


@cache
def registry() -> Registry:
    return Registry(settings.require("SKIFF_REGISTRY_TABLE"))


@cache
def notifier() -> Notifier:
    return notifier_from_env()


def production_problem(version: ModelVersion) -> str | None:
    """Why ``version``'s serving files cannot be loaded (fetched and verified as a container
    would), or None when they can."""
    store = ArtifactStore(settings.require("SKIFF_ARTIFACTS_BUCKET"))
    with tempfile.TemporaryDirectory() as scratch:
        try:
            store.fetch(
                version.artifact_uri or "",
                Path(scratch) / "model",
                only=SERVING_FILES,
                manifest_sha256=version.manifest_sha256,
            )
        except ArtifactError as exc:
            return str(exc)
    return None


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    detail = EventBridgeEvent(event).detail
    outcome = rollback_on_alarm(
        registry(),
        alarm_name=detail["alarmName"],
        state=detail["state"]["value"],
        window_seconds=settings.number("SKIFF_AUTO_ROLLBACK_WINDOW_SECONDS", 3600),
        unloadable_alarm=os.environ.get("SKIFF_UNLOADABLE_ALARM") or None,
        production_problem=production_problem,
    )
    if outcome.status in ("rolled-back", "canary-aborted"):
        # The alias first (it is what callers reach); both no-ops where the stack has neither.
        follow_alias(registry(), alias_from_env())
        follow_production(registry(), endpoint_from_env())
    notice = outcome.notice(detail["alarmName"])
    if notice is not None:
        notifier().send(notice)
    logger.info("auto-rollback %s: %s", outcome.status, outcome.reason, extra={"model_version": outcome.version})
    metrics.add_metric(name=f"AutoRollback_{outcome.status}", unit=MetricUnit.Count, value=1)
    return vars(outcome)
