"""Inference Lambda: POST /predict behind an API Gateway HTTP API (payload format 2.0).

Thin by design: parse and validate the request, ask skiff.serve.inference for predictions, answer.
Never imports torch.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, field_validator

from skiff.errors import RequestError
from skiff.serve.http import (
    ErrorBody,
    install_error_handlers,
    normalize_event,
    parse_json_body,
    require_json,
    valid_unicode,
)
from skiff.serve.inference import ModelServer, ServingSettings

logger = Logger(service="skiff-inference")
metrics = Metrics(namespace="Skiff", service="inference")
app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
install_error_handlers(app, metrics)


@cache
def server() -> ModelServer:
    """Built on the first request, then reused by the container (settings read once)."""
    return ModelServer(ServingSettings.from_env())


class PredictRequest(BaseModel):
    """Either one ``text`` or a list of ``texts``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | None = Field(default=None, description="one text to classify")
    texts: list[str] | None = Field(default=None, description="several texts to classify")

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
    if (request.text is None) == (request.texts is None):
        raise RequestError(
            "expected exactly one of 'text' or 'texts' (got: " + ("both" if request.text else "neither") + ")"
        )
    texts = [request.text] if request.text is not None else list(request.texts or [])
    began = time.perf_counter()
    answer = server().predict(texts)
    metrics.add_metric(name="PredictLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - began) * 1000)
    metrics.add_metric(name="TextsPredicted", unit=MetricUnit.Count, value=len(texts))
    for prediction in answer["predictions"]:
        metrics.add_metric(name=f"Predicted_{prediction['label']}", unit=MetricUnit.Count, value=1)
    logger.append_keys(model_version=answer["model_version"])
    return PredictResponse.model_validate(answer)


app.use(middlewares=[require_json])


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(normalize_event(event), context)
