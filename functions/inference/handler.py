"""Inference Lambda: POST /predict behind an API Gateway HTTP API (payload format 2.0).

Thin by design: parse and validate the request, ask skiff.serve.inference for predictions, answer.
Never imports torch.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skiff.serve.http import (
    ErrorBody,
    install_error_handlers,
    normalize_event,
    parse_json_body,
    require_json,
    valid_unicode,
)
from skiff.serve.inference import ModelServer, ServingSettings
from skiff.serve.lambda_alias import bound_model_version

logger = Logger(service="skiff-inference")
metrics = Metrics(namespace="Skiff", service="inference")
tracer = Tracer(service="skiff-inference")  # X-Ray, when the function runs with active tracing
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
install_error_handlers(app, metrics)


@cache
def server(bound_version: str | None = None) -> ModelServer:
    """Built once per container (settings read once). A published function version is bound to
    its model version; on Lambda a container runs one function version, so one server."""
    return ModelServer(ServingSettings.from_env(), bound_version=bound_version)


def function_environment(context: Any) -> Mapping[str, str]:
    """The environment of the function version serving this request: the process's own on
    Lambda; the local stack runs every published version in one process, so its context
    carries the version's environment (skiff/local/published.py)."""
    return getattr(context, "function_environment", None) or os.environ


def load_bound_model() -> None:
    """SnapStart's before-snapshot hook: a published version loads its model and onnxruntime
    session before the snapshot, so a restored container answers its first request at once."""
    version = bound_model_version(os.environ)
    if version is not None:
        server(version).current()


try:  # Lambda's Python runtime provides the module; outside it, only the dev install has it.
    from snapshot_restore_py import register_before_snapshot
except ImportError:
    pass
else:
    register_before_snapshot(load_bound_model)


MAX_DOCUMENTED_TEXTS, MAX_DOCUMENTED_CHARS = 64, 5000  # ServingSettings' defaults


def _predict_schema(schema: dict[str, Any]) -> None:
    """The schema of what the validator below accepts: one non-null field of the two, a
    non-empty list, and the default limits (the server answers 413 above its own)."""
    text = {"type": "string", "maxLength": MAX_DOCUMENTED_CHARS}
    schema["properties"]["text"] = {**text, "description": "one text to classify"}
    schema["properties"]["texts"] = {
        "type": "array",
        "items": text,
        "minItems": 1,
        "maxItems": MAX_DOCUMENTED_TEXTS,
        "description": "several texts to classify",
    }
    schema["oneOf"] = [{"required": ["text"]}, {"required": ["texts"]}]


class PredictRequest(BaseModel):
    """Either one ``text`` or a non-empty list of ``texts``, never both."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_predict_schema)
    text: str | None = None
    texts: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        given = [name for name in ("text", "texts") if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of 'text' or 'texts' (got: {'both' if given else 'neither'})")
        if getattr(self, given[0]) is None:
            raise ValueError(f"expected {given[0]} to be a {'string' if given[0] == 'text' else 'list'} (got: null)")
        if self.texts is not None and not self.texts:
            raise ValueError("expected at least one text (got: an empty list)")
        return self

    @field_validator("text")
    @classmethod
    def _text_is_unicode(cls, text: str | None) -> str | None:
        return None if text is None else valid_unicode(text)

    @field_validator("texts")
    @classmethod
    def _texts_are_unicode(cls, texts: list[str] | None) -> list[str] | None:
        return None if texts is None else [valid_unicode(t) for t in texts]


class Prediction(BaseModel):
    label: str
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model_version: str = Field(description="the registered model version that answered")
    predictions: list[Prediction]


@app.post(
    "/predict",
    summary="Classify text with the production model",
    responses={
        200: {"description": "labels and scores", "content": {"application/json": {"model": PredictResponse}}},
        400: {"description": "malformed JSON or wrong types", "content": {"application/json": {"model": ErrorBody}}},
        413: {"description": "too many or too long texts", "content": {"application/json": {"model": ErrorBody}}},
        415: {"description": "body is not JSON", "content": {"application/json": {"model": ErrorBody}}},
        503: {
            "description": "no model in production yet (Retry-After)",
            "content": {"application/json": {"model": ErrorBody}},
        },
    },
)
def predict(request: PredictRequest) -> PredictResponse:
    texts = [request.text] if request.text is not None else list(request.texts or [])
    began = time.perf_counter()
    answer = server(bound_model_version(function_environment(app.lambda_context))).predict(texts)
    metrics.add_metric(name="PredictLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - began) * 1000)
    metrics.add_metric(name="TextsPredicted", unit=MetricUnit.Count, value=len(texts))
    # One value per label and request (a Count's Sum is the same as one 1 per text): a
    # 64-text request would otherwise add 64 values, ~8 µs each in Powertools.
    for label, count in Counter(p["label"] for p in answer["predictions"]).items():
        metrics.add_metric(name=f"Predicted_{label}", unit=MetricUnit.Count, value=count)
    logger.append_keys(model_version=answer["model_version"])
    record_latency_of_version(answer["model_version"], (time.perf_counter() - began) * 1000)
    return PredictResponse.model_validate(answer)


def record_latency_of_version(version: str, milliseconds: float) -> None:
    """PredictLatency per model version, so the dashboard can set a new version's latency beside
    the previous one's. Its own EMF record: the function's other metrics (the unloadable
    alarm's among them) keep their service-only dimensions."""
    per_version = _metrics_of_version(version)
    per_version.add_metric(name="PredictLatency", unit=MetricUnit.Milliseconds, value=milliseconds)
    per_version.flush_metrics()


@cache
def _metrics_of_version(version: str) -> EphemeralMetrics:
    """Made once per version (a container serves one, two during a switch): the dimension is a
    default one, so it survives each flush."""
    per_version = EphemeralMetrics(namespace="Skiff", service="inference")
    per_version.set_default_dimensions(model_version=version)
    return per_version


app.use(middlewares=[require_json])


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(normalize_event(event), context)
