from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.inference import handler
from skiff.model.predictor import Predictor
from tests.conftest import ROOT
from tests.events import http_event
from tests.functions.conftest import BUCKET, Stack


class Context:
    function_name = "skiff-inference"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000

    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:skiff-inference"
    aws_request_id = "req-1"


@pytest.fixture(autouse=True)
def fresh_container() -> None:
    handler.server.cache_clear()  # each test is a cold container


def call(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = handler.lambda_handler(event, Context())
    return response["statusCode"], json.loads(response["body"]), response.get("headers", {})


def predict(body: Any, **options: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    return call(http_event("POST", "/predict", body, **options))


@pytest.fixture
def serving(stack: Stack, small_artifact: Path) -> str:
    version = stack.publish(small_artifact)
    stack.registry.promote(version, "first model")
    return version


def test_one_text_gets_label_scores_and_version(serving: str) -> None:
    status, body, _ = predict({"text": "my parcel went to the wrong address"})
    assert status == 200
    assert body["model_version"] == serving
    (prediction,) = body["predictions"]
    assert prediction["label"] == "delivery"
    assert set(prediction["scores"]) == {"account", "billing", "delivery", "technical"}


def test_several_texts_are_answered_in_order(serving: str, small_artifact: Path) -> None:
    # ("my parcel never arrived" is ambiguous on the demo data: "has not arrived" is a billing phrase there.)
    texts = [
        "I was charged twice, refund please",
        "my parcel went to the wrong address",
        "I was charged twice, refund please",
    ]
    one_by_one = [Predictor.from_directory(small_artifact).predict([t])[0].label for t in texts]
    assert len(set(one_by_one)) == 2  # different answers, so an order mix-up would show
    status, body, _ = predict({"texts": texts})
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == one_by_one


def test_serving_never_imports_torch(small_artifact: Path) -> None:
    """In a fresh process (this one has torch loaded by training fixtures): serve, then look."""
    code = f"""
import json, sys
import boto3
from moto import mock_aws
with mock_aws():
    from skiff.registry.table import create_table
    from tests.functions.conftest import Stack, TABLE, BUCKET
    from skiff.registry.table import Registry
    from skiff.registry.artifacts import ArtifactStore
    from pathlib import Path
    create_table(TABLE)
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={{"LocationConstraint": "eu-west-1"}})
    stack = Stack(Registry(TABLE), ArtifactStore(BUCKET), Path("unused"))
    stack.registry.promote(stack.publish(Path({str(small_artifact)!r})), "first")
    from functions.inference import handler
    from tests.events import http_event
    from tests.functions.test_inference import Context
    response = handler.lambda_handler(http_event("POST", "/predict", {{"text": "hello"}}), Context())
    assert response["statusCode"] == 200, response
    print(json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))))
"""
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "SKIFF_REGISTRY_TABLE": "skiff-registry",
        "SKIFF_ARTIFACTS_BUCKET": "skiff-artifacts",
        "SKIFF_MODEL_CACHE_DIR": str(small_artifact.parent / "cache-no-torch"),
    }
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


def test_nothing_in_production_is_503_with_retry_after(stack: Stack) -> None:
    status, body, headers = predict({"text": "hello"})
    assert status == 503 and headers["Retry-After"] == "30"
    assert body["error"]["code"] == "no_production_model"


def test_malformed_json_is_400(serving: str) -> None:
    status, body, _ = predict('{"text": "unclosed')
    assert status == 400
    assert body["error"]["message"] == "expected a JSON body (got: malformed JSON)"


def test_wrong_type_is_400_naming_the_field(serving: str) -> None:
    status, body, _ = predict({"text": 42})
    assert status == 400 and "text" in body["error"]["message"]


def test_unknown_field_is_400(serving: str) -> None:
    status, body, _ = predict({"txt": "hello"})
    assert status == 400 and "txt" in body["error"]["message"]


def test_both_text_and_texts_is_400(serving: str) -> None:
    status, body, _ = predict({"text": "a", "texts": ["b"]})
    assert (status, body["error"]["message"]) == (400, "expected exactly one of 'text' or 'texts' (got: both)")


def test_neither_field_is_400(serving: str) -> None:
    status, body, _ = predict({})
    assert (status, body["error"]["message"]) == (400, "expected exactly one of 'text' or 'texts' (got: neither)")


def test_a_null_text_is_400_as_the_schema_says(serving: str) -> None:
    status, body, _ = predict({"text": None})
    assert (status, body["error"]["message"]) == (400, "expected text to be a string (got: null)")


def test_empty_texts_is_400(serving: str) -> None:
    status, body, _ = predict({"texts": []})
    assert (status, body["error"]["message"]) == (400, "expected at least one text (got: an empty list)")


def test_too_many_texts_is_413(serving: str) -> None:
    status, body, _ = predict({"texts": ["hello"] * 65})
    assert (status, body["error"]["message"]) == (413, "expected at most 64 texts per request (got: 65)")


def test_too_long_text_is_413(serving: str) -> None:
    status, body, _ = predict({"text": "x" * 5001})
    assert status == 413 and "at most 5000 characters (got: 5001 in text 0)" in body["error"]["message"]


def test_limits_are_configurable(serving: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_MAX_TEXTS", "2")
    assert predict({"texts": ["a", "b", "c"]})[0] == 413


def binary_body(raw: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    """As API Gateway passes a body that is not valid UTF-8: base64, flagged."""
    event = http_event("POST", "/predict", "", content_type=content_type)
    event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
    return event


def test_a_body_that_is_not_utf8_is_400() -> None:
    status, body, _ = call(binary_body(b"\xff\xfe"))
    assert (status, body["error"]["message"]) == (400, "expected a UTF-8 body (got: invalid byte at 0)")


def test_a_binary_body_without_content_type_is_415() -> None:
    status, body, _ = call(binary_body(b"\xff\xfe", content_type=None))
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"


def test_ten_thousand_nested_brackets_are_400_not_a_recursion_error() -> None:
    status, body, _ = predict("[" * 10_000)
    assert (status, body["error"]["message"]) == (400, "expected JSON nested at most 16 levels deep (got: deeper)")


def test_a_five_thousand_digit_number_is_400() -> None:
    status, body, _ = predict('{"text": ' + "9" * 5000 + "}")
    assert (status, body["error"]["message"]) == (400, "expected numbers of at most 30 digits (got: 5000)")


def test_nan_is_not_json() -> None:
    status, body, _ = predict('{"text": NaN}')
    assert (status, body["error"]["message"]) == (400, "expected standard JSON (got: NaN, which JSON does not have)")


def test_a_body_above_the_size_limit_is_413() -> None:
    status, body, _ = predict({"text": "x" * (4 * 1024 * 1024)})
    assert status == 413 and body["error"]["message"].startswith("expected a body of at most 4194304 characters")


def test_a_lone_surrogate_is_read_as_a_replacement_character_and_answered(serving: str) -> None:
    status, body, _ = predict('{"texts": ["my parcel \\ud800 never came"]}')
    assert status == 200 and body["model_version"] == serving


def test_multipart_without_a_boundary_is_415_not_a_crash(serving: str) -> None:
    status, body, _ = predict("--x\r\n", content_type="multipart/form-data")
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")


def test_media_types_are_case_insensitive(serving: str) -> None:
    status, _, _ = predict({"text": "hello"}, content_type="APPLICATION/JSON; charset=UTF-8")
    assert status == 200


def test_not_json_is_415(serving: str) -> None:
    status, body, _ = predict("text=hello", content_type="application/x-www-form-urlencoded")
    assert status == 415
    assert body["error"]["message"] == "expected content-type application/json (got: application/x-www-form-urlencoded)"


def test_plain_text_is_415_in_the_same_error_format(serving: str) -> None:
    status, body, _ = predict("hello", content_type="text/plain")
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")


def test_missing_content_type_is_415(serving: str) -> None:
    assert predict({"text": "hello"}, content_type=None)[0] == 415


def test_unknown_route_is_404(serving: str) -> None:
    status, body, _ = call(http_event("POST", "/predictions", {"text": "hello"}))
    assert status == 404 and body["error"]["code"] == "unknown_route"


def test_wrong_method_is_404(serving: str) -> None:
    assert call(http_event("GET", "/predict"))[0] == 404


def test_new_production_version_is_served_after_promotion(stack: Stack, serving: str, small_artifact: Path) -> None:
    assert predict({"text": "hello"})[1]["model_version"] == serving
    newer = stack.publish(small_artifact)
    stack.registry.promote(newer, "newer")
    assert predict({"text": "hello"})[1]["model_version"] == newer


def test_tampered_new_version_is_refused_and_the_old_keeps_serving(
    stack: Stack, serving: str, small_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert predict({"text": "hello"})[1]["model_version"] == serving
    newer = stack.publish(small_artifact)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key=f"models/{newer}/model.int8.onnx", Body=b"not the model that was trained")
    stack.registry.promote(newer, "newer")
    status, body, _ = predict({"text": "hello"})
    assert (status, body["model_version"]) == (200, serving)


def test_tampered_only_version_is_a_503_not_a_crash(stack: Stack, small_artifact: Path) -> None:
    version = stack.publish(small_artifact)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"models/{version}/labels.json", Body=b'["x","y"]')
    stack.registry.promote(version, "first")
    status, body, _ = predict({"text": "hello"})
    assert status == 503 and "labels.json" in body["error"]["message"]


def test_model_switch_under_a_request_loop_fails_no_request(stack: Stack, serving: str, small_artifact: Path) -> None:
    newer = stack.publish(small_artifact)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() or len(answers) < 20:
            status, body, _ = predict({"text": "my card was declined"})
            answers.append((status, body.get("model_version", "")))

    worker = threading.Thread(target=loop)
    worker.start()
    while len(answers) < 20:
        pass
    stack.registry.promote(newer, "switch under load")
    seen_new = len(answers)
    while len(answers) < seen_new + 20:
        pass
    stop.set()
    worker.join()
    assert all(status == 200 for status, _ in answers)
    assert {version for _, version in answers} == {serving, newer}
    assert answers[-1][1] == newer


def test_latency_is_recorded_per_model_version_apart_from_the_other_metrics(
    stack: Stack, small_artifact: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    version = stack.publish(small_artifact)
    stack.registry.promote(version, "test")
    capsys.readouterr()
    predict({"text": "my parcel is late"})
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    by_schema = {tuple(r["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]): r for r in records}
    assert by_schema[("model_version", "service")]["model_version"] == version
    assert "PredictLatency" in by_schema[("model_version", "service")]
    assert "model_version" not in by_schema[("service",)]  # error metrics, the alarm's among them, stay per service


def test_predicted_labels_are_counted_once_per_label_and_request(
    stack: Stack, small_artifact: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    stack.registry.promote(stack.publish(small_artifact), "test")
    capsys.readouterr()
    texts = ["my parcel is late", "where is my parcel", "refund please", "the app crashes"]
    labels = [p["label"] for p in predict({"texts": texts})[1]["predictions"]]
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    counted = {k: v for r in records for k, v in r.items() if k.startswith("Predicted_")}
    assert counted == {f"Predicted_{label}": [float(labels.count(label))] for label in set(labels)}


# ---- published versions: a container bound to one model version ---------------------------


def test_a_published_version_answers_with_its_own_model_after_production_moved_on(
    stack: Stack, small_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = stack.publish(small_artifact)
    stack.registry.promote(bound, "first model")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "3")
    monkeypatch.setenv("SKIFF_MODEL_VERSION", bound)
    assert predict({"text": "refund please"})[1]["model_version"] == bound
    stack.registry.promote(stack.publish(small_artifact), "a newer model")  # the alias moves, not this container
    assert predict({"text": "refund please"})[1]["model_version"] == bound


def test_latest_follows_the_registry_whatever_its_environment_says(
    stack: Stack, small_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.registry.promote(stack.publish(small_artifact), "first model")
    newer = stack.publish(small_artifact)
    stack.registry.promote(newer, "a newer model")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    monkeypatch.setenv("SKIFF_MODEL_VERSION", "v-some-candidate")  # left there by the last publication
    assert predict({"text": "refund please"})[1]["model_version"] == newer


def test_snapstart_loads_the_bound_model_before_the_snapshot(
    stack: Stack, small_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapshot_restore_py

    assert (handler.load_bound_model, (), {}) in snapshot_restore_py._before_snapshot_registry
    bound = stack.publish(small_artifact)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "3")
    monkeypatch.setenv("SKIFF_MODEL_VERSION", bound)
    handler.load_bound_model()  # what the runtime calls before it takes the snapshot
    assert handler.server(bound).current().version == bound  # loaded: no request needed
    assert stack.registry.production_version() is None  # and bound: production played no part


def test_snapstart_on_latest_loads_nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    handler.load_bound_model()
    assert handler.server.cache_info().currsize == 0
