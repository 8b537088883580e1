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


def test_a_teacher_version_becomes_the_teacher_channel_of_its_registered_artifact() -> None:
    job = request(SKIFF_HYPERPARAMETERS=json.dumps({"teacher_version": "v20261203-031315237-d8e9"}))
    assert channels(job)["teacher"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://artifacts/models/v20261203-031315237-d8e9/",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert json.loads(job["HyperParameters"]["teacher_version"]) == "v20261203-031315237-d8e9"


def test_without_a_teacher_there_is_no_teacher_channel() -> None:
    assert "teacher" not in channels(request())


def test_an_unreadable_isolation_setting_is_refused_with_its_value() -> None:
    with pytest.raises(ConfigError, match="SKIFF_TRAINING_NETWORK_ISOLATION to be true or false .got: 'maybe'"):
        request(SKIFF_TRAINING_NETWORK_ISOLATION="maybe")


def test_one_instance_needs_no_traffic_encryption_between_instances() -> None:
    assert request()["EnableInterContainerTrafficEncryption"] is False


def test_several_instances_encrypt_their_traffic() -> None:
    assert request(SKIFF_TRAINING_INSTANCE_COUNT="2")["EnableInterContainerTrafficEncryption"] is True


KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd"


def test_the_stack_key_encrypts_the_job_output() -> None:
    assert request(SKIFF_KMS_KEY_ARN=KEY)["OutputDataConfig"]["KmsKeyId"] == KEY


def test_the_stack_key_encrypts_the_volume_of_an_instance_with_an_ebs_volume() -> None:
    job = request(SKIFF_KMS_KEY_ARN=KEY, SKIFF_TRAINING_INSTANCE_TYPE="ml.m5.xlarge")
    assert job["ResourceConfig"]["VolumeKmsKeyId"] == KEY


@pytest.mark.parametrize("instance_type", ["ml.g5.xlarge", "ml.g4dn.xlarge", "ml.p4d.24xlarge", "ml.m5d.large"])
def test_no_volume_key_is_sent_for_instance_storage_which_sagemaker_would_refuse(instance_type: str) -> None:
    job = request(SKIFF_KMS_KEY_ARN=KEY, SKIFF_TRAINING_INSTANCE_TYPE=instance_type)
    assert "VolumeKmsKeyId" not in job["ResourceConfig"]
    assert job["OutputDataConfig"]["KmsKeyId"] == KEY


def test_without_a_key_no_key_is_named() -> None:
    job = request()
    assert "KmsKeyId" not in job["OutputDataConfig"] and "VolumeKmsKeyId" not in job["ResourceConfig"]


@pytest.mark.parametrize("instance_type", ["ml.g5.xlarge", "ml.m5.xlarge"])
def test_the_request_is_valid_for_botocores_sagemaker_model(instance_type: str) -> None:
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    job = request(SKIFF_KMS_KEY_ARN=KEY, SKIFF_TRAINING_INSTANCE_TYPE=instance_type, SKIFF_TRAINING_INSTANCE_COUNT="2")
    validate_parameters(job, model.operation_model("CreateTrainingJob").input_shape)  # raises when invalid


def test_a_stack_whose_prefix_extends_this_ones_does_not_own_its_jobs() -> None:
    settings = TrainingJobSettings.from_env(ENV)
    assert settings.dataset_version_of("skiff-test-ds-000012") == "ds-000012"
    assert settings.dataset_version_of("skiff-test-2-ds-000001") is None
    assert settings.dataset_version_of("skiff-test-ds-000001-retry") is None


@pytest.mark.parametrize(
    ("job", "stack", "heard"),
    [
        ("skiff-test-ds-000001", "skiff-test", True),
        ("skiff-test-2-ds-000001", "skiff-test-2", False),  # overlapping prefix, another stack
        ("skiff-test-ds-000001", None, False),  # an untagged job that merely looks like ours
    ],
)
def test_the_event_rule_hears_only_this_stacks_tagged_jobs(aws: None, job: str, stack: str | None, heard: bool) -> None:
    import boto3

    from skiff.retrain.launch import training_event_pattern

    detail = {"TrainingJobName": job, "TrainingJobStatus": "Completed", "Tags": {"skiff:stack": stack} if stack else {}}
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="completion")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="training-job-state", EventPattern=json.dumps(training_event_pattern("skiff-test")))
    events.put_targets(Rule="training-job-state", Targets=[{"Id": "completion", "Arn": queue_arn}])
    events.put_events(
        Entries=[
            {
                "Source": "aws.sagemaker",
                "DetailType": "SageMaker Training Job State Change",
                "Detail": json.dumps(detail),
            }
        ]
    )
    delivered = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages", [])
    assert bool(delivered) is heard
