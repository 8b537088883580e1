from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from skiff.errors import RequestError
from skiff.registry.table import Registry, create_table
from skiff.serve.gpu_endpoint import GpuEndpoint, GpuEndpointSettings, endpoint_state_changed, follow_production
from skiff.serve.sagemaker_handler import input_fn, model_fn, output_fn, predict_fn

BUCKET = "skiff-artifacts"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd"
SETTINGS = GpuEndpointSettings(
    endpoint_name="skiff-test-gpu",
    role_arn="arn:aws:iam::123456789012:role/skiff-test-endpoint",
    image_uri="763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.6-gpu-py312",
    code_uri=f"s3://{BUCKET}/serving/code/",
    instance_type="ml.g4dn.xlarge",  # moto 5.2.5's instance-type list predates g5
    kms_key_arn=KEY,
)
CODE = {"inference.py": b"from skiff.serve.sagemaker_handler import *", "requirements.txt": b"--no-index\n"}
CODE["wheels/skiff-0.1.0-py3-none-any.whl"] = b"PK"


@pytest.fixture
def registry(aws: None) -> Registry:
    create_table("registry")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for name, body in CODE.items():
        s3.put_object(Bucket=BUCKET, Key=f"serving/code/{name}", Body=body)
    return Registry("registry")


def promote_new(registry: Registry, artifact_uri: str = f"s3://{BUCKET}/models/x") -> str:
    version = registry.register(
        artifact_uri=artifact_uri, manifest_sha256="ab" * 32, metrics={}, lineage={"training_job": "j"}
    ).version
    registry.promote(version, "test")
    return version


def test_first_promotion_creates_model_config_and_endpoint(registry: Registry) -> None:
    version = promote_new(registry)
    config = follow_production(registry, GpuEndpoint(SETTINGS))
    sagemaker = boto3.client("sagemaker")
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"]) == (f"skiff-test-gpu-{version}", "ml.g4dn.xlarge")
    assert sagemaker.describe_endpoint(EndpointName="skiff-test-gpu")["EndpointConfigName"] == config


def test_the_model_is_the_versions_folder_read_uncompressed_by_an_isolated_container(registry: Registry) -> None:
    version = promote_new(registry)
    request = GpuEndpoint(SETTINGS).model_request(registry.get(version))
    container = request["PrimaryContainer"]
    assert container["ModelDataSource"] == {
        "S3DataSource": {"S3Uri": f"s3://{BUCKET}/models/x/", "S3DataType": "S3Prefix", "CompressionType": "None"}
    }
    assert container["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py", "SKIFF_MODEL_VERSION": version}
    assert request["EnableNetworkIsolation"] is True


def test_the_endpoint_code_is_copied_into_the_versions_folder(registry: Registry) -> None:
    version = promote_new(registry)
    follow_production(registry, GpuEndpoint(SETTINGS))
    s3 = boto3.client("s3")
    for name, body in CODE.items():
        assert s3.get_object(Bucket=BUCKET, Key=f"models/x/code/{name}")["Body"].read() == body, version


@pytest.mark.parametrize(("instance_type", "keyed"), [("ml.g4dn.xlarge", False), ("ml.m5.xlarge", True)])
def test_the_stack_key_encrypts_the_endpoint_volume_unless_it_is_instance_storage(
    registry: Registry, instance_type: str, keyed: bool
) -> None:
    from dataclasses import replace

    version = registry.get(promote_new(registry))
    request = GpuEndpoint(replace(SETTINGS, instance_type=instance_type)).endpoint_config_request(version)
    assert request.get("KmsKeyId") == (KEY if keyed else None)


@pytest.mark.parametrize("instance_type", ["ml.g4dn.xlarge", "ml.m5.xlarge"])
def test_the_requests_are_valid_for_botocores_sagemaker_model(registry: Registry, instance_type: str) -> None:
    from dataclasses import replace

    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    endpoint = GpuEndpoint(replace(SETTINGS, instance_type=instance_type))
    version = registry.get(promote_new(registry))
    validate_parameters(endpoint.model_request(version), model.operation_model("CreateModel").input_shape)
    config = endpoint.endpoint_config_request(version)
    validate_parameters(config, model.operation_model("CreateEndpointConfig").input_shape)


def test_names_fit_sagemakers_63_character_limit() -> None:
    assert len(GpuEndpoint(SETTINGS).resource_name("v20261122-184501123-a1b2" * 3)) == 63


def test_without_its_code_uploaded_the_endpoint_does_not_move(registry: Registry) -> None:
    s3 = boto3.client("s3")
    for name in CODE:
        s3.delete_object(Bucket=BUCKET, Key=f"serving/code/{name}")
    promote_new(registry)
    assert follow_production(registry, GpuEndpoint(SETTINGS)) is None
    assert boto3.client("sagemaker").list_endpoints()["Endpoints"] == []


def test_disabled_endpoint_is_a_no_op(registry: Registry) -> None:
    promote_new(registry)
    assert follow_production(registry, None) is None


def test_settings_are_off_unless_the_stack_names_an_endpoint() -> None:
    assert GpuEndpointSettings.from_env({}) is None
    with pytest.raises(Exception, match="SKIFF_GPU_ENDPOINT_ROLE_ARN"):
        GpuEndpointSettings.from_env({"SKIFF_GPU_ENDPOINT_NAME": "x"})


def test_endpoint_handler_functions_answer_like_predict(small_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_MODEL_VERSION", "v1")
    predictor = model_fn(str(small_artifact))
    texts = input_fn(json.dumps({"texts": ["my parcel is late", "refund my invoice"]}), "application/json")
    body, content_type = output_fn(predict_fn(texts, predictor), "application/json")
    answer = json.loads(body)
    assert content_type == "application/json" and answer["model_version"] == "v1"
    assert [p["label"] for p in answer["predictions"]] == ["delivery", "billing"]


def test_endpoint_input_is_validated() -> None:
    with pytest.raises(RequestError, match="expected content-type application/json"):
        input_fn("hello", "text/plain")
    with pytest.raises(RequestError, match=r'expected \{"text": "\.\.\."\}'):
        input_fn(json.dumps({"texts": [1, 2]}), "application/json")


def test_a_later_promotion_updates_the_endpoint_to_the_new_config(registry: Registry) -> None:
    endpoint = GpuEndpoint(SETTINGS)
    promote_new(registry)
    follow_production(registry, endpoint)
    second = promote_new(registry)
    try:
        config = endpoint.follow(registry.get(second))
    except NotImplementedError:
        pytest.skip("moto 5.2.5 does not implement update_endpoint (FACTS.md)")
    assert boto3.client("sagemaker").describe_endpoint(EndpointName="skiff-test-gpu")["EndpointConfigName"] == config


# ---- whether the endpoint really serves production ----------------------------------------


def test_following_production_records_that_the_endpoint_is_updating(registry: Registry) -> None:
    version = promote_new(registry)
    config = follow_production(registry, GpuEndpoint(SETTINGS))
    recorded = registry.get(version).gpu_endpoint
    assert recorded is not None and recorded["state"] == "updating" and config in recorded["reason"]


def test_a_refused_request_is_recorded_as_failed_and_production_stays(registry: Registry) -> None:
    for name in CODE:
        boto3.client("s3").delete_object(Bucket=BUCKET, Key=f"serving/code/{name}")
    version = promote_new(registry)
    follow_production(registry, GpuEndpoint(SETTINGS))
    recorded = registry.get(version).gpu_endpoint
    assert recorded is not None and recorded["state"] == "failed" and "no inference.py" in recorded["reason"]
    assert registry.production_version() == version


def test_an_endpoint_in_service_on_productions_config_is_recorded_as_serving(registry: Registry) -> None:
    version = promote_new(registry)
    endpoint = GpuEndpoint(SETTINGS)
    follow_production(registry, endpoint)
    outcome = endpoint_state_changed(
        registry, endpoint, {"EndpointName": "skiff-test-gpu", "EndpointStatus": "IN_SERVICE"}
    )
    assert (outcome.state, outcome.version) == ("serving", version)
    assert registry.get(version).gpu_endpoint["state"] == "serving"
    assert outcome.notice("skiff-test-gpu") is None


def stubbed_endpoint(described: dict) -> GpuEndpoint:
    """A real SageMaker client whose DescribeEndpoint answer is ``described`` (botocore checks its shape):
    moto cannot make an update fail."""
    from botocore.stub import Stubber

    sagemaker = boto3.client("sagemaker")
    stubber = Stubber(sagemaker)
    answer = {
        "EndpointName": "skiff-test-gpu",
        "EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/skiff-test-gpu",
        "CreationTime": "2026-12-01T00:00:00Z",
        "LastModifiedTime": "2026-12-01T00:00:00Z",
        **described,
    }
    stubber.add_response("describe_endpoint", answer, {"EndpointName": "skiff-test-gpu"})
    stubber.activate()
    return GpuEndpoint(SETTINGS, sagemaker=sagemaker)


def test_a_failed_update_is_recorded_with_sagemakers_reason_and_notified(registry: Registry) -> None:
    first = promote_new(registry)
    second = promote_new(registry)
    endpoint = stubbed_endpoint(
        {
            "EndpointStatus": "InService",  # a failed update leaves the endpoint on its previous config
            "EndpointConfigName": f"skiff-test-gpu-{first}",
            "FailureReason": "The primary container for variant AllTraffic did not pass the ping health check.",
        }
    )
    outcome = endpoint_state_changed(
        registry, endpoint, {"EndpointName": "skiff-test-gpu", "EndpointStatus": "IN_SERVICE"}
    )
    assert (outcome.state, outcome.version) == ("failed", second)
    recorded = registry.get(second).gpu_endpoint
    assert recorded["state"] == "failed" and "ping health check" in recorded["reason"]
    assert registry.production_version() == second  # the Lambda API keeps serving production
    notice = outcome.notice("skiff-test-gpu")
    assert notice is not None and notice.event == "endpoint-failed" and "ping health check" in notice.details["reason"]


def test_a_repeated_failure_event_is_recorded_and_notified_once(registry: Registry) -> None:
    first, second = promote_new(registry), promote_new(registry)
    described = {
        "EndpointStatus": "Failed",
        "EndpointConfigName": f"skiff-test-gpu-{second}",
        "FailureReason": "capacity",
    }
    event = {"EndpointName": "skiff-test-gpu", "EndpointStatus": "FAILED"}
    assert endpoint_state_changed(registry, stubbed_endpoint(described), event).state == "failed"
    again = endpoint_state_changed(registry, stubbed_endpoint(described), event)
    assert again.state == "ignored" and again.notice("skiff-test-gpu") is None
    assert [a["action"] for a in registry.audit()].count("endpoint-failed") == 1, first


def test_another_endpoints_event_is_ignored(registry: Registry) -> None:
    promote_new(registry)
    outcome = endpoint_state_changed(registry, GpuEndpoint(SETTINGS), {"EndpointName": "someone-else"})
    assert outcome.state == "ignored" and "someone-else" in (outcome.reason or "")
