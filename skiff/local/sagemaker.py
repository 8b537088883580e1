"""Run a SageMaker training job, as described by ``describe_training_job``, on this machine.

moto records ``create_training_job`` requests but runs nothing (and reports every job
Completed at once). This turns such a request into what SageMaker would do: pull the input
channels from S3 (``S3Prefix`` or ``ManifestFile``), run training/train.py under the
container contract with the hyperparameters decoded as the training toolkit decodes them,
upload ``model.tar.gz`` to the output path, and describe the outcome as the detail of an
EventBridge "SageMaker Training Job State Change" event.
"""

from __future__ import annotations

import json
import tarfile
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff.aws import client
from skiff.local.container import run_training_container
from skiff.model.hyperparameters import Hyperparameters
from skiff.registry.artifacts import parse_s3_uri
from skiff.retrain.launch import decode_sagemaker_hyperparameters


def _download_channel(s3: Any, source: Mapping[str, Any], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    bucket, key = parse_s3_uri(source["S3Uri"])
    if source["S3DataType"] == "ManifestFile":
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        prefix_bucket, prefix = parse_s3_uri(manifest[0]["prefix"])
        keys = [(prefix_bucket, prefix + relative) for relative in manifest[1:]]
    else:
        paginator = s3.get_paginator("list_objects_v2")
        keys = [
            (bucket, o["Key"])
            for page in paginator.paginate(Bucket=bucket, Prefix=key)
            for o in page.get("Contents", [])
        ]
        # Paths are kept from the prefix's last "/" on, as SageMaker does: the prefix
        # "source/sourcedir.tar.gz" (the network-isolated job's code channel) gives
        # "<channel>/sourcedir.tar.gz".
        prefix = key[: key.rfind("/") + 1]
    for object_bucket, object_key in keys:
        path = target / object_key[len(prefix) :].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(object_bucket, object_key, str(path))


def event_detail(description: Mapping[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    """The ``detail`` of a training job state-change event (times as epoch milliseconds)."""
    created = description.get("CreationTime") or datetime.now(UTC)
    return {
        "TrainingJobName": description["TrainingJobName"],
        "TrainingJobArn": description.get("TrainingJobArn"),
        "TrainingJobStatus": status,
        "SecondaryStatus": status,
        "HyperParameters": description.get("HyperParameters", {}),
        "InputDataConfig": description.get("InputDataConfig", []),
        "OutputDataConfig": description.get("OutputDataConfig", {}),
        "ResourceConfig": description.get("ResourceConfig", {}),
        "CreationTime": str(int(created.timestamp() * 1000)),
        # SageMaker's events carry the job's tags as a map; the stack's rule matches on skiff:stack.
        "Tags": {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])},
        **extra,
    }


def state_change_event(detail: Mapping[str, Any], region: str, account: str = "123456789012") -> dict[str, Any]:
    """The EventBridge envelope SageMaker sends (see ../shared/events for a captured one)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "SageMaker Training Job State Change",
        "source": "aws.sagemaker",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [detail.get("TrainingJobArn") or ""],
        "detail": dict(detail),
    }


def run_described_job(
    description: Mapping[str, Any],
    root: Path,
    s3: Any = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the job locally; return the final state-change event detail (Completed, Failed, or
    Stopped when ``cancel`` was set while it ran)."""
    s3 = s3 or client("s3")
    name = description["TrainingJobName"]
    channels = {}
    for channel in description.get("InputDataConfig", []):
        target = root / "channels" / channel["ChannelName"]
        _download_channel(s3, channel["DataSource"]["S3DataSource"], target)
        channels[channel["ChannelName"]] = target
    hyperparameters = Hyperparameters.from_strings(decode_sagemaker_hyperparameters(description["HyperParameters"]))
    run = run_training_container(
        root / "container",
        channels,
        hyperparameters,
        job_name=name,
        on_progress=on_progress,
        extra_env=description.get("Environment") or {},
        cancel=cancel,
    )
    if run.stopped:
        return event_detail(description, "Stopped", FailureReason=run.failure_reason)
    if not run.succeeded:
        return event_detail(description, "Failed", FailureReason=run.failure_reason)
    archive = root / "model.tar.gz"
    # Fast compression: SageMaker gzips model.tar.gz too, but a laptop should not wait on level 9.
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(run.model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    bucket, prefix = parse_s3_uri(description["OutputDataConfig"]["S3OutputPath"])
    key = f"{prefix.rstrip('/')}/{name}/output/model.tar.gz".lstrip("/")
    s3.upload_file(str(archive), bucket, key)
    return event_detail(description, "Completed", ModelArtifacts={"S3ModelArtifacts": f"s3://{bucket}/{key}"})
