from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from skiff.errors import RequestError
from skiff.registry.table import Registry, create_table
from skiff.serve.gpu_endpoint import GpuEndpoint, GpuEndpointSettings, follow_production
from skiff.serve.sagemaker_handler import input_fn, model_fn, output_fn, predict_fn

SETTINGS = GpuEndpointSettings(
    endpoint_name="skiff-test-gpu",
    role_arn="arn:aws:iam::123456789012:role/skiff-test-endpoint",
    image_uri="763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-gpu-py311",
    source_uri="s3://skiff-artifacts/source/serving-sourcedir.tar.gz",
    instance_type="ml.g4dn.xlarge",  # moto 5.2.5's instance-type list predates g5
)


@pytest.fixture
def registry(aws: None) -> Registry:
    create_table("registry")
    return Registry("registry")


def promote_new(
    registry: Registry, model_artifacts: str | None = "s3://skiff-artifacts/jobs/j/output/model.tar.gz"
) -> str:
    lineage = {"training_job": "j", **({"model_artifacts": model_artifacts} if model_artifacts else {})}
    version = registry.register(
        artifact_uri="s3://skiff-artifacts/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage=lineage
    ).version
    registry.promote(version, "test")
    return version


def test_first_promotion_creates_model_config_and_endpoint(registry: Registry) -> None:
    version = promote_new(registry)
    config = follow_production(registry, GpuEndpoint(SETTINGS))
    sagemaker = boto3.client("sagemaker")
    model = sagemaker.describe_model(ModelName=f"skiff-test-gpu-{version}")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://skiff-artifacts/jobs/j/output/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"]["SKIFF_MODEL_VERSION"] == version
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "serve.py"
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"]) == (f"skiff-test-gpu-{version}", "ml.g4dn.xlarge")
    assert sagemaker.describe_endpoint(EndpointName="skiff-test-gpu")["EndpointConfigName"] == config


def test_names_fit_sagemakers_63_character_limit() -> None:
    assert len(GpuEndpoint(SETTINGS).resource_name("v20261122-184501123-a1b2" * 3)) == 63


def test_a_version_without_its_model_archive_does_not_move_the_endpoint(registry: Registry) -> None:
    promote_new(registry, model_artifacts=None)
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
