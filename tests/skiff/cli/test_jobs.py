"""`skiff jobs`: this stack's jobs only, and the local stack's jobs of an earlier run too."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from skiff.cli.client import StackClient, StackOutputs
from skiff.retrain.launch import TrainingJobSettings, training_job_request

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
