"""HTTP plumbing shared by the API Lambdas: one place maps errors to status codes.

Both APIs answer errors as ``{"error": {"code": ..., "message": ...}}``. A client mistake is
a 4xx with a message that says what was expected; only our own faults are 5xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict

from skiff.errors import (
    ConflictError,
    ModelUnavailableError,
    NotFoundError,
    NothingInProductionError,
    PayloadTooLargeError,
    RegistryError,
    RequestError,
    UnsupportedMediaTypeError,
)

RETRY_AFTER_SECONDS = 30

# Limits applied while parsing a body, before any schema sees it: every request these APIs
# accept is a flat object holding strings or one list of strings.
MAX_BODY_CHARS = 4 * 1024 * 1024  # 64 texts × 5,000 characters, even if every one is a \uXXXX escape pair
MAX_DEPTH = 16
MAX_NUMBER_DIGITS = 30
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def parse_json_body(body: str) -> Any:
    """``json.loads`` with limits on size, nesting and number length; only standard JSON.

    Python's parser would otherwise recurse until RecursionError on deep nesting, spend
    seconds on (and then refuse) a number of thousands of digits, and accept NaN.
    """
    if len(body) > MAX_BODY_CHARS:
        raise PayloadTooLargeError(f"expected a body of at most {MAX_BODY_CHARS} characters (got: {len(body)})")
    if body.count("[") + body.count("{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise RequestError(f"expected JSON nested at most {MAX_DEPTH} levels deep (got: deeper)")

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
            raise RequestError(f"expected numbers of at most {MAX_NUMBER_DIGITS} digits (got: {len(digits)})")
        return int(digits)

    def refuse_constant(name: str) -> None:
        raise RequestError(f"expected standard JSON (got: {name}, which JSON does not have)")

    return json.loads(body, parse_int=bounded_int, parse_constant=refuse_constant)


def _depth(body: str) -> int:
    deepest = depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", body)):  # brackets inside strings do not nest
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def normalize_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event with its media type lower-cased: ``APPLICATION/JSON`` is ``application/json``
    (RFC 9110), but the resolver compares it case-sensitively."""
    headers = dict(event.get("headers") or {})
    content_type = headers.get("content-type")
    if content_type:
        media, separator, parameters = content_type.partition(";")
        headers["content-type"] = media.strip().lower() + separator + parameters
    return {**event, "headers": headers}


def valid_unicode(text: str) -> str:
    """``text`` with lone surrogates (legal in a JSON string, not in Unicode) as U+FFFD, which
    every featurizer and tokenizer can encode."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        if error.get("type") == "json_invalid":
            return "expected a JSON body (got: malformed JSON)"
        if error.get("type") == "value_error":  # a model's own rule: its message says it all
            problems.append(str(error.get("ctx", {}).get("error") or error.get("msg", "invalid")))
            continue
        got = error.get("input")
        problems.append(
            f"{where}: {error.get('msg', 'invalid')}" + (f" (got: {json.dumps(got)[:60]})" if got is not None else "")
        )
    return "; ".join(problems) or "invalid request"


def _not_json(event: Any) -> UnsupportedMediaTypeError | None:
    if event.http_method not in ("POST", "PUT", "PATCH"):
        return None
    content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return None
    return UnsupportedMediaTypeError(
        f"expected content-type application/json (got: {content_type or 'no content-type'})"
    )


def require_json(app: APIGatewayHttpResolver, next_middleware: Any) -> Any:
    """Middleware: 415 unless a body-carrying request says it is JSON.

    Powertools validates the body before any middleware runs, so a non-JSON body is first
    seen as a validation error; the handler for those asks the same question (see below).
    """
    if (error := _not_json(app.current_event)) is not None:
        raise error
    return next_middleware(app)


def install_error_handlers(app: APIGatewayHttpResolver, metrics: Metrics | None = None) -> Callable[..., Response]:
    """Map every Skiff error to its status code, counting each answer in ``metrics``.

    Returns the error-response builder, for a handler's own extra mappings.
    """

    def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        if metrics is not None:
            metrics.add_metric(name="ClientErrors" if status < 500 else "ServerErrors", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name=f"Errors_{code}", unit=MetricUnit.Count, value=1)
        return Response(
            status_code=status,
            content_type=content_types.APPLICATION_JSON,
            body=json.dumps({"error": {"code": code, "message": message}}),
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    def invalid_request(exc: RequestValidationError) -> Response:
        if (media := _not_json(app.current_event)) is not None:
            return error_response(415, "unsupported_media_type", str(media))
        return error_response(400, "invalid_request", _validation_message(exc))

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported_content_type(exc: RequestUnsupportedContentType) -> Response:
        media = _not_json(app.current_event)
        return error_response(415, "unsupported_media_type", str(media or exc))

    @app.exception_handler(ValueError)
    def unparseable_other_media(exc: ValueError) -> Response:
        # Powertools parses form and multipart bodies itself and raises ValueError on a malformed
        # one (a multipart type without boundary); these APIs take JSON only, so that is a 415.
        if (media := _not_json(app.current_event)) is not None:
            return error_response(415, "unsupported_media_type", str(media))
        raise exc

    @app.exception_handler(UnicodeDecodeError)
    def not_utf8(exc: UnicodeDecodeError) -> Response:
        if (media := _not_json(app.current_event)) is not None:
            return error_response(415, "unsupported_media_type", str(media))
        return error_response(400, "invalid_request", f"expected a UTF-8 body (got: invalid byte at {exc.start})")

    @app.exception_handler(RequestError)
    def client_error(exc: RequestError) -> Response:
        codes = {400: "invalid_request", 413: "payload_too_large", 415: "unsupported_media_type"}
        return error_response(exc.status_code, codes.get(exc.status_code, "invalid_request"), str(exc))

    @app.exception_handler(NotFoundError)
    def not_found_error(exc: NotFoundError) -> Response:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(NothingInProductionError)
    def nothing_in_production(exc: NothingInProductionError) -> Response:
        return error_response(503, "no_production_model", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(ModelUnavailableError)
    def model_unavailable(exc: ModelUnavailableError) -> Response:
        return error_response(503, "model_unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(ConflictError)
    def conflict(exc: ConflictError) -> Response:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(RegistryError)
    def registry_error(exc: RegistryError) -> Response:
        return error_response(400, "invalid_request", str(exc))

    @app.not_found
    def unknown_route(exc: Any) -> Response:
        event = app.current_event
        return error_response(
            404, "unknown_route", f"expected one of this API's routes (got: {event.http_method} {event.path})"
        )

    return error_response
