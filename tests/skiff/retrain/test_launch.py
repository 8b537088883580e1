"""The training job request: network-isolated by default, with the source as the code channel."""

from __future__ import annotations

import json

import pytest

from skiff.errors import ConfigError
from skiff.retrain.launch import CODE_CHANNEL_SOURCE, TrainingJobSettings, training_job_request

SOURCE = "s3://artifacts/source/sourcedir.tar.gz"
MANIFEST = "s3://data/datasets/versions/ds-000001/channel.manifest"
ENV = {
    "SKIFF_JOB_PREFIX": "skiff-test",
    "SKIFF_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/skiff-training",
    "SKIFF_TRAINING_IMAGE_URI": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.10-gpu-py313",
    "SKIFF_TRAINING_SOURCE_URI": SOURCE,
    "SKIFF_ARTIFACTS_BUCKET": "artifacts",
}


def request(**env: str) -> dict:
    return training_job_request(TrainingJobSettings.from_env({**ENV, **env}), "ds-000001", MANIFEST, "eu-west-1")


def channels(job: dict) -> dict[str, dict]:
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in job["InputDataConfig"]}


def test_a_job_is_network_isolated_by_default() -> None:
    assert request()["EnableNetworkIsolation"] is True


def test_an_isolated_job_gets_its_source_as_the_code_channel_and_reads_it_from_disk() -> None:
    job = request()
    assert channels(job)["code"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": SOURCE,
        "S3DataDistributionType": "FullyReplicated",
    }
    assert json.loads(job["HyperParameters"]["sagemaker_submit_directory"]) == CODE_CHANNEL_SOURCE


def test_without_isolation_the_container_fetches_its_source_from_s3() -> None:
    job = request(SKIFF_TRAINING_NETWORK_ISOLATION="false")
    assert job["EnableNetworkIsolation"] is False
    assert set(channels(job)) == {"train"}
    assert json.loads(job["HyperParameters"]["sagemaker_submit_directory"]) == SOURCE


def test_an_unreadable_isolation_setting_is_refused_with_its_value() -> None:
    with pytest.raises(ConfigError, match="SKIFF_TRAINING_NETWORK_ISOLATION to be true or false .got: 'maybe'"):
        request(SKIFF_TRAINING_NETWORK_ISOLATION="maybe")


def test_one_instance_needs_no_traffic_encryption_between_instances() -> None:
    assert request()["EnableInterContainerTrafficEncryption"] is False


def test_several_instances_encrypt_their_traffic() -> None:
    assert request(SKIFF_TRAINING_INSTANCE_COUNT="2")["EnableInterContainerTrafficEncryption"] is True
