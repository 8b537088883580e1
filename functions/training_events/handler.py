"""Events Lambda: "SageMaker Training Job State Change" for this stack's jobs, "SageMaker
Endpoint State Change" for its GPU endpoint (stacks with one), and "Skiff Production Changed"
when a change to production left the inference alias waiting for a published version, and
"Skiff Canary Due" (EventBridge Scheduler, at a canary's end)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from skiff.notify import Notifier, notifier_from_env
from skiff.retrain.completion import CompletionSettings, TrainingCompletion
from skiff.serve.canary import CANARY_DUE, CanaryScheduler, canary_scheduler_from_env
from skiff.serve.gpu_endpoint import ENDPOINT_EVENT, endpoint_from_env, endpoint_state_changed
from skiff.serve.lambda_alias import DEPLOYMENT_REASON, PRODUCTION_CHANGED, alias_from_env, follow_alias

logger = Logger(service="skiff-training-events")
metrics = Metrics(namespace="Skiff", service="training-events")
tracer = Tracer(service="skiff-training-events")  # X-Ray, when the function runs with active tracing


@cache
def completion() -> TrainingCompletion:
    return TrainingCompletion(
        CompletionSettings.from_env(), gpu_endpoint=endpoint_from_env(), inference_alias=alias_from_env()
    )


def production_changed(detail: dict[str, Any]) -> dict[str, Any]:
    """Finish moving the alias to production (waiting as long as this function may).

    After a deployment (the stack invokes this function synchronously, from ``pulumi up``):
    publish production again with the code just deployed, waiting only as long as a follower
    does, and announce the rest of the move rather than hold the deployment for minutes."""
    done = completion()
    deployed = detail.get("reason") == DEPLOYMENT_REASON
    wait = None if deployed else done.settings.alias_wait_seconds
    outcome = follow_alias(done.registry, done.inference_alias, wait, announce=deployed)
    if outcome is None:
        return {"state": "ignored", "reason": "this stack serves no published versions"}
    logger.info("alias: %s", outcome.state, extra={"model_version": outcome.model_version, "reason": outcome.reason})
    if not outcome.done and not deployed:
        # Raising makes EventBridge retry (then the dead-letter queue keeps the event).
        raise RuntimeError(f"alias did not reach production {outcome.model_version}: {outcome.reason}")
    return {**vars(outcome), "deleted": list(outcome.deleted)}


def endpoint_event(detail: dict[str, Any]) -> dict[str, Any]:
    endpoint = completion().gpu_endpoint
    if endpoint is None:
        return {"state": "ignored", "reason": "this stack has no GPU endpoint"}
    outcome = endpoint_state_changed(completion().registry, endpoint, detail)
    logger.info("GPU endpoint: %s", outcome.state, extra={"model_version": outcome.version, "reason": outcome.reason})
    metrics.add_metric(name=f"EndpointOutcome_{outcome.state}", unit=MetricUnit.Count, value=1)
    notice = outcome.notice(endpoint.settings.endpoint_name)
    if notice is not None:
        notifier().send(notice)
    return vars(outcome)


@cache
def canary_scheduler() -> CanaryScheduler | None:
    return canary_scheduler_from_env()


def canary_due(detail: dict[str, Any]) -> dict[str, Any]:
    """A canary's end: promote it, or abort it when a serving alarm is in ALARM; then the alias
    (and the GPU endpoint) follow."""
    scheduler = canary_scheduler()
    if scheduler is None:
        return {"state": "ignored", "reason": "this stack schedules no canaries"}
    done = completion()
    outcome = scheduler.decide(done.registry, str(detail.get("version")), until=detail.get("until"))
    logger.info("canary %s: %s", outcome.state, outcome.reason, extra={"model_version": outcome.version})
    metrics.add_metric(name=f"Canary_{outcome.state}", unit=MetricUnit.Count, value=1)
    if outcome.state != "ignored":
        done.follow_production()
        notice = outcome.notice()
        if notice is not None:
            notifier().send(notice)
    return vars(outcome)


@cache
def notifier() -> Notifier:
    return notifier_from_env()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = EventBridgeEvent(event)
    if parsed.detail_type == ENDPOINT_EVENT:
        return endpoint_event(parsed.detail)
    if parsed.detail_type == PRODUCTION_CHANGED:
        return production_changed(parsed.detail)
    if parsed.detail_type == CANARY_DUE:
        return canary_due(parsed.detail)
    detail = parsed.detail
    outcome = completion().handle(detail)
    logger.info(
        "training job %s: %s",
        outcome.job_name,
        outcome.status,
        extra={"model_version": outcome.version, "reason": outcome.reason, "next_job": outcome.next_job},
    )
    if outcome.status != "ignored":
        metrics.add_metric(name=f"TrainingOutcome_{outcome.status}", unit=MetricUnit.Count, value=1)
    notice = outcome.notice()
    if notice is not None:
        notifier().send(notice)
    return {
        "job": outcome.job_name,
        "status": outcome.status,
        "version": outcome.version,
        "reason": outcome.reason,
        "next_job": outcome.next_job,
    }
