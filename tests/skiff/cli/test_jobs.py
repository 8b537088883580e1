"""`skiff jobs`: this stack's jobs only, and the local stack's jobs of an earlier run too."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest

from skiff.cli.client import StackClient, StackOutputs
from skiff.retrain.launch import TRAINING_LOG_GROUP, TrainingJobSettings, training_job_request

API = "https://a1b2c3.execute-api.eu-west-1.amazonaws.com"


def start(prefix: str, dataset_version: str) -> None:
    settings = TrainingJobSettings(
        job_prefix=prefix,
        role_arn="arn:aws:iam::123456789012:role/r",
        image_uri="763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.10-gpu-py313",
        source_uri="s3://artifacts/source/sourcedir.tar.gz",
        artifacts_bucket="artifacts",
    )
    request = training_job_request(settings, dataset_version, "s3://data/channel.manifest", "eu-west-1")
    boto3.client("sagemaker", region_name="eu-west-1").create_training_job(**request)


def test_only_this_stacks_jobs_are_listed(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    stacks = (
        ("skiff-dev", "ds-000001"),
        ("skiff-dev2", "ds-000001"),
        ("skiff-dev-2", "ds-000003"),
        ("other", "ds-000009"),
    )
    for prefix, version in stacks:
        start(prefix, version)
    start("skiff-dev", "ds-000002")
    client = StackClient(StackOutputs(API, "data", "artifacts", "table", "skiff-dev", region="eu-west-1"))
    # (moto's CreationTime has a resolution of a second: compare without order)
    assert sorted(j["name"] for j in client.jobs()) == ["skiff-dev-ds-000001", "skiff-dev-ds-000002"]


def test_the_local_stack_lists_jobs_of_an_earlier_run_from_its_progress_file(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    progress = tmp_path / "jobs.json"
    reason = "Failed: interrupted: the local stack stopped while the job ran"
    progress.write_text(
        json.dumps({"skiff-local-ds-000001": {"status": "Failed", "failure_reason": reason, "started": 1.0}})
    )
    outputs = StackOutputs(API, "data", "artifacts", "table", "skiff-local", region="eu-west-1")
    client = StackClient(outputs)
    client.outputs = StackOutputs(**{**vars(outputs), "progress_file": str(progress)})
    (job,) = client.jobs()
    assert (job["dataset_version"], job["status"], job["failure_reason"]) == ("ds-000001", "Failed", reason)


def test_a_deployed_jobs_logs_are_its_cloudwatch_streams_only(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    logs = boto3.client("logs", region_name="eu-west-1")
    logs.create_log_group(logGroupName=TRAINING_LOG_GROUP)
    for stream, message in (
        ("skiff-dev-ds-000001/algo-1-1700000000", "epoch 1/3 loss 0.41"),
        ("skiff-dev-ds-000001/algo-1-1700000000", "epoch 2/3 loss 0.22"),
        ("skiff-dev-ds-000010/algo-1-1700000001", "another job's line"),
    ):
        if stream not in {
            s["logStreamName"] for s in logs.describe_log_streams(logGroupName=TRAINING_LOG_GROUP)["logStreams"]
        }:
            logs.create_log_stream(logGroupName=TRAINING_LOG_GROUP, logStreamName=stream)
        logs.put_log_events(
            logGroupName=TRAINING_LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": message}],
        )
    client = StackClient(StackOutputs(API, "data", "artifacts", "table", "skiff-dev", region="eu-west-1"))
    assert client.log_lines("skiff-dev-ds-000001") == ["epoch 1/3 loss 0.41", "epoch 2/3 loss 0.22"]
    assert client.log_lines("skiff-dev-ds-000001", after=1) == ["epoch 2/3 loss 0.22"]


def test_a_job_without_logs_yet_has_no_lines(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = StackClient(StackOutputs(API, "data", "artifacts", "table", "skiff-dev", region="eu-west-1"))
    assert client.log_lines("skiff-dev-ds-000001") == []


def test_a_local_jobs_duration_is_its_executors_clock(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    progress = tmp_path / "jobs.json"
    progress.write_text(
        json.dumps({"skiff-local-ds-000001": {"status": "Completed", "started": 100.0, "ended": 142.5}})
    )
    outputs = StackOutputs(API, "data", "artifacts", "table", "skiff-local", region="eu-west-1")
    client = StackClient(outputs)
    client.outputs = StackOutputs(**{**vars(outputs), "progress_file": str(progress)})
    (job,) = client.jobs()
    assert job["seconds"] == 42.5


def test_a_deployed_running_jobs_duration_counts_from_its_creation(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    start("skiff-dev", "ds-000001")
    client = StackClient(StackOutputs(API, "data", "artifacts", "table", "skiff-dev", region="eu-west-1"))
    (job,) = client.jobs()
    assert job["seconds"] is not None and 0 <= job["seconds"] < 60


def test_a_deployed_jobs_logs_link_to_its_streams_in_the_console() -> None:
    client = StackClient(StackOutputs(API, "data", "artifacts", "table", "skiff-dev", region="eu-west-1"))
    url = client.logs_console_url("skiff-dev-ds-000001")
    assert url is not None and url.startswith(
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#"
    )
    assert "$252Faws$252Fsagemaker$252FTrainingJobs" in url and url.endswith("skiff-dev-ds-000001$252F")
