"""Registry admin API Lambda (IAM-authorized in the stack; inputs validated here regardless).

GET  /models                      versions, newest first (?limit=&cursor=)
GET  /models/production           the serving version and the alias history
GET  /models/{version}            one version
POST /models/{version}/promote    {"reason": "..."}
POST /rollback                    {"reason": "..."}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from skiff import settings
from skiff.aws import client
from skiff.errors import ConflictError, RequestError
from skiff.notify import Notice, Notifier, notifier_from_env
from skiff.registry.table import (
    MAX_CANARY_MINUTES,
    MAX_CANARY_PERCENT,
    REASON_PATTERN,
    VERSION_ID,
    AliasChange,
    Canary,
    Registry,
)
from skiff.serve.canary import CanaryScheduler, canary_scheduler_from_env
from skiff.serve.gpu_endpoint import GpuEndpoint, endpoint_from_env, follow_production
from skiff.serve.http import ErrorBody, install_error_handlers, normalize_event, parse_json_body, require_json
from skiff.serve.lambda_alias import InferenceAlias, alias_from_env, follow_alias

logger = Logger(service="skiff-registry-api")
metrics = Metrics(namespace="Skiff", service="registry-api")
tracer = Tracer(service="skiff-registry-api")  # X-Ray, when the function runs with active tracing
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
error_response = install_error_handlers(app, metrics)
app.use(middlewares=[require_json])

VERSION_PATTERN = VERSION_ID.pattern
VersionId = Annotated[str, Path(pattern=VERSION_PATTERN, description="a registered model version id")]

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="[operation, version, idempotency_key]",
    payload_validation_jmespath="reason",
    expires_after_seconds=24 * 3600,
)

_idempotent_change: Callable[..., dict[str, Any]] | None = None
_gpu_endpoint: GpuEndpoint | None = None
_gpu_endpoint_checked = False


@cache
def registry() -> Registry:
    return Registry(settings.require("SKIFF_REGISTRY_TABLE"))


def _apply(change: dict[str, Any]) -> dict[str, Any]:
    """Runs once per change (a replayed idempotent request does not come here): tell subscribers."""
    operation = change["operation"]
    if operation == "canary":
        return _start_canary(change)
    if operation == "abort-canary":
        ended = registry().abort_canary(change["reason"], actor=change["actor"])
        if ended is None:
            raise ConflictError("expected a running canary to abort (got: none)")
        notifier().send(
            Notice("canary-aborted", f"canary {ended.version} aborted by {change['actor']}", ended.to_dict())
        )
        return ended.to_dict()
    if operation == "promote":
        done = registry().promote(change["version"], change["reason"], actor=change["actor"])
    else:
        done = registry().rollback(change["reason"], actor=change["actor"])
    notifier().send(done.notice())
    return done.to_dict()


def _start_canary(change: dict[str, Any]) -> dict[str, Any]:
    scheduler = canary_scheduler()
    if scheduler is None:
        raise ConflictError("expected a stack that schedules canaries (got: no SKIFF_CANARY_TARGET_ARN)")
    started = registry().start_canary(
        change["version"], change["percent"], change["minutes"], change["reason"], actor=change["actor"]
    )
    try:
        scheduler.schedule(started)
    except Exception:
        # Without its schedule nothing would end the canary: undo it, and say why.
        registry().abort_canary("its end could not be scheduled", actor="canary", version=started.version)
        raise
    notifier().send(
        Notice(
            "canary-started",
            f"canary {started.version} serves {started.percent:g} % until {started.until} ({change['actor']})",
            started.to_dict(),
        )
    )
    return started.to_dict()


@cache
def canary_scheduler() -> CanaryScheduler | None:
    return canary_scheduler_from_env()


@cache
def notifier() -> Notifier:
    return notifier_from_env()


def change_production(change: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """Promote or roll back; with a key, a repeated request replays the first answer."""
    result = _change_production(change, idempotency_key)
    # The alias first: it is what callers reach. Both no-ops where the stack has neither.
    followed = follow_alias(registry(), inference_alias())
    follow_production(registry(), gpu_endpoint())
    if "revision" in result and followed is not None and followed.model_version == result["version"]:
        # The answer says where the alias went, once it did (a pending version: not yet).
        result = {**result, "function_version": followed.function_version if followed.done else None}
    return result


@cache
def inference_alias() -> InferenceAlias | None:
    return alias_from_env()


def gpu_endpoint() -> GpuEndpoint | None:
    global _gpu_endpoint, _gpu_endpoint_checked
    if not _gpu_endpoint_checked:
        _gpu_endpoint, _gpu_endpoint_checked = endpoint_from_env(), True
    return _gpu_endpoint


def _change_production(change: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    global _idempotent_change
    if idempotency_key is None:
        return _apply(change)
    if not IDEMPOTENCY_KEY.match(idempotency_key):
        raise RequestError(f"expected Idempotency-Key of 8-128 letters, digits or ._:- (got: {idempotency_key[:40]!r})")
    if _idempotent_change is None:  # built on first use: the persistence layer creates a client
        persistence = DynamoDBPersistenceLayer(
            table_name=registry().table,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value="IDEMPOTENCY#registry-api",
            boto3_client=client("dynamodb"),
        )
        _idempotent_change = idempotent_function(
            data_keyword_argument="change", persistence_store=persistence, config=IDEMPOTENCY
        )(lambda change: _apply(change))
    return _idempotent_change(change={**change, "idempotency_key": idempotency_key})


@app.exception_handler([IdempotencyValidationError, IdempotencyAlreadyInProgressError])
def idempotency_conflict(exc: Exception) -> Response:
    message = (
        "expected the same body as the first request with this Idempotency-Key (got: a different reason)"
        if isinstance(exc, IdempotencyValidationError)
        else "expected the first request with this Idempotency-Key to have finished (got: still in progress)"
    )
    return error_response(409, "conflict", message)


def actor() -> str:
    """Who asked: the IAM principal API Gateway verified, else the caller's source IP."""
    context = app.current_event.request_context
    iam = context.authorizer.iam if context.authorizer else None
    if iam is not None and iam.user_arn:
        return iam.user_arn
    return f"unauthenticated:{context.http.source_ip}"


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(
        min_length=1,
        max_length=500,
        pattern=REASON_PATTERN,  # one visible character: the registry refuses a blank reason
        description="why production changes (kept in the audit trail)",
    )


class GpuEndpointState(BaseModel):
    state: Literal["updating", "serving", "failed"]
    reason: str | None
    at: str


class ModelVersionBody(BaseModel):
    version: str
    status: str
    created_at: str
    updated_at: str
    model_family: str
    artifact_uri: str | None
    manifest_sha256: str | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    status_reason: str | None
    gpu_endpoint: GpuEndpointState | None = Field(
        default=None, description="what the stack's GPU endpoint did with this version (stacks with one only)"
    )
    function_version: str | None = Field(
        default=None, description="the inference function's published version bound to this version, once published"
    )


class CanaryRequest(ChangeRequest):
    percent: float = Field(gt=0, le=MAX_CANARY_PERCENT, description="share of requests the version serves")
    minutes: float = Field(gt=0, le=MAX_CANARY_MINUTES, description="how long before it is promoted or aborted")


class ModelPage(BaseModel):
    models: list[ModelVersionBody]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class ProductionBody(BaseModel):
    production: ModelVersionBody | None
    history: list[AliasChange]
    canary: Canary | None = Field(default=None, description="a version serving a share of requests, if any")


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"model": model}}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _json(ErrorBody, "invalid input"),
    404: _json(ErrorBody, "unknown version or route"),
    409: _json(ErrorBody, "the registry's state forbids it"),
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: _json(ErrorBody, "body too large"),
    415: _json(ErrorBody, "body is not JSON"),
}


@app.get(
    "/models",
    summary="List model versions, newest first",
    responses={200: _json(ModelPage, "one page of versions"), **ERRORS},
)
def list_models(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(pattern=VERSION_PATTERN, description="next_cursor of the previous page: older versions")
    ] = None,
) -> ModelPage:
    versions, following = registry().list_versions(limit=limit, cursor=cursor)
    return ModelPage(models=[ModelVersionBody(**v.to_dict()) for v in versions], next_cursor=following)


@app.get(
    "/models/production",
    summary="The serving version and the alias history",
    responses={200: _json(ProductionBody, "the production version (null before the first) and its history"), **ERRORS},
)
def production() -> ProductionBody:
    current = registry().production()
    return ProductionBody(
        production=ModelVersionBody(**current.to_dict()) if current else None,
        history=registry().history(limit=50),
        canary=registry().canary(),
    )


@app.get(
    "/models/<version>", summary="One model version", responses={200: _json(ModelVersionBody, "the version"), **ERRORS}
)
def get_model(version: VersionId) -> ModelVersionBody:
    return ModelVersionBody(**registry().get(version).to_dict())


@app.post(
    "/models/<version>/promote",
    summary="Make a version serve",
    responses={200: _json(AliasChange, "the alias change"), **BODY_ERRORS},
)
def promote(version: VersionId, request: ChangeRequest) -> AliasChange:
    change = change_production(
        {"operation": "promote", "version": version, "reason": request.reason, "actor": actor()}, _idempotency_key()
    )
    metrics.add_metric(name="Promotions", unit=MetricUnit.Count, value=1)
    logger.info("promoted", extra={"model_version": version, "revision": change["revision"], "actor": change["actor"]})
    return AliasChange(**change)


@app.post(
    "/rollback",
    summary="Return production to the previous version",
    responses={200: _json(AliasChange, "the alias change"), **BODY_ERRORS},
)
def rollback(request: ChangeRequest) -> AliasChange:
    change = change_production(
        {"operation": "rollback", "version": None, "reason": request.reason, "actor": actor()}, _idempotency_key()
    )
    metrics.add_metric(name="Rollbacks", unit=MetricUnit.Count, value=1)
    logger.info("rolled back", extra={"model_version": change["version"], "revision": change["revision"]})
    return AliasChange(**change)


@app.post(
    "/models/<version>/canary",
    summary="Let a version serve a share of requests, then promote it unless a serving alarm fires",
    responses={202: _json(Canary, "the canary, running"), **BODY_ERRORS},
)
def canary(version: VersionId, request: CanaryRequest) -> Response[Canary]:
    started = change_production(
        {
            "operation": "canary",
            "version": version,
            "reason": request.reason,
            "percent": request.percent,
            "minutes": request.minutes,
            "actor": actor(),
        },
        _idempotency_key(),
    )
    metrics.add_metric(name="CanariesStarted", unit=MetricUnit.Count, value=1)
    logger.info("canary started", extra={"model_version": version, "percent": request.percent})
    return Response(202, "application/json", Canary(**started))


@app.post(
    "/canary/abort",
    summary="End the running canary without promoting it",
    responses={200: _json(Canary, "the canary that ended"), **BODY_ERRORS},
)
def abort_canary(request: ChangeRequest) -> Canary:
    ended = change_production(
        {"operation": "abort-canary", "version": None, "reason": request.reason, "actor": actor()},
        _idempotency_key(),
    )
    logger.info("canary aborted", extra={"model_version": ended["version"]})
    return Canary(**ended)


def _idempotency_key() -> str | None:
    return app.current_event.headers.get("idempotency-key")


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    IDEMPOTENCY.register_lambda_context(context)  # in-progress records expire with the invocation
    return app.resolve(normalize_event(event), context)
