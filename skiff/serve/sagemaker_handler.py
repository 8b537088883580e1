"""The GPU endpoint's handler functions, as the SageMaker inference toolkit calls them.

SageMaker downloads the version's folder (the artifact plus ``code/``) as ``model_dir``; the
toolkit installs ``code/requirements.txt`` from the wheels beside it and imports
``code/inference.py``, which re-exports these. The model is the same verified int8 artifact
the Lambda serves, run by onnxruntime on the GPU when CUDA is there; the request and answer
match POST /predict, and a bad request is the toolkit's own 4xx error.
"""

from __future__ import annotations

import json
import os
from typing import Any

from skiff.errors import RequestError
from skiff.model.artifact import load_artifact
from skiff.model.predictor import Predictor


def model_fn(model_dir: str) -> Predictor:
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return Predictor(load_artifact(model_dir), providers=providers)


def client_error(status: int, message: str) -> Exception:
    """An error the toolkit answers with ``status`` (it turns any other exception into a 500);
    outside the endpoint, where the toolkit is absent, our own RequestError."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return RequestError(message)
    return GenericInferenceToolkitError(status, message)


def input_fn(body: bytes | str, content_type: str) -> list[str]:
    if content_type.split(";")[0].strip() != "application/json":
        raise client_error(415, f"expected content-type application/json (got: {content_type})")
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise client_error(400, f"expected a JSON body (got: {exc})") from exc
    if isinstance(request, dict) and isinstance(request.get("text"), str):
        return [request["text"]]
    if (
        isinstance(request, dict)
        and isinstance(request.get("texts"), list)
        and all(isinstance(t, str) for t in request["texts"])
    ):
        return request["texts"]
    raise client_error(400, 'expected {"text": "..."} or {"texts": ["...", ...]} (got: another shape)')


def predict_fn(texts: list[str], predictor: Predictor) -> dict[str, Any]:
    return {
        "model_version": os.environ.get("SKIFF_MODEL_VERSION", "unknown"),
        "predictions": [{"label": p.label, "scores": p.scores} for p in predictor.predict(texts)],
    }


def output_fn(answer: dict[str, Any], accept: str) -> tuple[str, str]:
    return json.dumps(answer), "application/json"
