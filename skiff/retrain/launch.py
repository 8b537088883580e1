"""Launching SageMaker training jobs for dataset versions, one at a time.

The SageMaker SDK is too heavy for a Lambda, so the request is built here and sent with
boto3's ``create_training_job``. The job name derives from the dataset version, so a
duplicate event finds the job already exists and treats that as success.

At most one job runs. A state item in the registry table records the running job and the
newest dataset version waiting behind it; versions are cumulative, so when the running job
ends only the newest waiting version needs training — nothing is lost and nothing piles up.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from skiff import dynamo
from skiff import settings as env
from skiff.aws import LazyClient, has_instance_storage
from skiff.errors import ConfigError, ConflictError
from skiff.model.artifact import code_version
from skiff.model.hyperparameters import Hyperparameters
from skiff.registry.artifacts import MODELS_PREFIX

log = logging.getLogger(__name__)

ENTRY_POINT = "training/train.py"
CODE_CHANNEL = "code"
CODE_CHANNEL_SOURCE = "/opt/ml/input/data/code/sourcedir.tar.gz"
"""Where an isolated container finds the source: it cannot fetch sagemaker_submit_directory from
S3 itself, so (as the SageMaker SDK does) the bundle arrives as the ``code`` input channel."""
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
MAX_ATTEMPTS = 20

STACK_TAG = "skiff:stack"
"""Every job of a stack carries its prefix under this tag; the stack's event rule matches it."""

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
"""Where SageMaker writes every training job's logs, for the whole account and region."""


@dataclass(frozen=True)
class TrainingJobSettings:
    """Everything a training job request needs; from the stack's outputs via the environment."""

    job_prefix: str
    role_arn: str
    image_uri: str
    source_uri: str  # s3://…/sourcedir.tar.gz holding skiff/ and training/
    artifacts_bucket: str
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    volume_gb: int = 30
    use_spot: bool = True
    max_runtime_seconds: int = 3600
    max_wait_seconds: int = 7200
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    tags: Mapping[str, str] = field(default_factory=dict)
    base_model_uri: str | None = None  # s3:// prefix of a Hugging Face model dir (transformer family)
    network_isolation: bool = True  # the container reaches no network: the bundle carries its wheels
    kms_key_arn: str | None = None  # the stack's key: job output, and the volume where there is one
    log_retention_days: int | None = None  # for SageMaker's account-wide training log group, if it has none

    def __post_init__(self) -> None:
        if not self.job_prefix or len(self.job_prefix) > 40:
            raise ConfigError(f"job_prefix should be 1-40 characters (got: {self.job_prefix!r})")
        if not self.source_uri.startswith("s3://"):
            raise ConfigError(f"source_uri should be an s3:// URI (got: {self.source_uri!r})")
        if self.use_spot and self.max_wait_seconds < self.max_runtime_seconds:
            raise ConfigError(
                f"max_wait_seconds should be >= max_runtime_seconds with spot "
                f"(got: {self.max_wait_seconds} < {self.max_runtime_seconds})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingJobSettings:
        e = os.environ if environ is None else environ
        raw_hp = e.get("SKIFF_HYPERPARAMETERS", "").strip()
        try:
            hp_values = json.loads(raw_hp) if raw_hp else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"expected SKIFF_HYPERPARAMETERS to be a JSON object (got: {raw_hp[:60]!r})") from exc
        raw_tags = e.get("SKIFF_JOB_TAGS", "").strip()
        return cls(
            job_prefix=env.require("SKIFF_JOB_PREFIX", e),
            role_arn=env.require("SKIFF_SAGEMAKER_ROLE_ARN", e),
            image_uri=env.require("SKIFF_TRAINING_IMAGE_URI", e),
            source_uri=env.require("SKIFF_TRAINING_SOURCE_URI", e),
            artifacts_bucket=env.require("SKIFF_ARTIFACTS_BUCKET", e),
            instance_type=e.get("SKIFF_TRAINING_INSTANCE_TYPE") or "ml.g5.xlarge",
            instance_count=env.integer("SKIFF_TRAINING_INSTANCE_COUNT", 1, e, minimum=1),
            volume_gb=env.integer("SKIFF_TRAINING_VOLUME_GB", 30, e, minimum=1),
            use_spot=env.boolean("SKIFF_TRAINING_USE_SPOT", True, e),
            max_runtime_seconds=env.integer("SKIFF_TRAINING_MAX_RUNTIME_SECONDS", 3600, e, minimum=60),
            max_wait_seconds=env.integer("SKIFF_TRAINING_MAX_WAIT_SECONDS", 7200, e, minimum=60),
            hyperparameters=Hyperparameters.from_strings({k: str(v) for k, v in hp_values.items()}),
            tags=json.loads(raw_tags) if raw_tags else {},
            base_model_uri=e.get("SKIFF_BASE_MODEL_URI") or None,
            network_isolation=env.boolean("SKIFF_TRAINING_NETWORK_ISOLATION", True, e),
            kms_key_arn=e.get("SKIFF_KMS_KEY_ARN") or None,
            log_retention_days=env.integer("SKIFF_TRAINING_LOG_RETENTION_DAYS", 0, e, minimum=0) or None,
        )

    def job_name(self, dataset_version: str) -> str:
        return f"{self.job_prefix}-{dataset_version}"

    def dataset_version_of(self, job_name: str) -> str | None:
        return dataset_version_of(self.job_prefix, job_name)


def dataset_version_of(job_prefix: str, job_name: str) -> str | None:
    """The dataset version a job of the stack named ``job_prefix`` trains, or None for someone
    else's job (also for a stack whose prefix merely starts with this one's: "skiff-dev-2-ds-000001"
    is not "skiff-dev"'s job)."""
    match = re.fullmatch(re.escape(job_prefix) + r"-(ds-\d{6,})", job_name)
    return match.group(1) if match else None


def sagemaker_hyperparameters(
    hp: Hyperparameters, entry_point: str, source_uri: str, region: str, distributed: bool = False
) -> dict[str, str]:
    """Hyperparameters as the SageMaker SDK writes them: JSON-encoded values, plus script mode's keys."""
    values: dict[str, Any] = {
        **hp.to_dict(),
        "sagemaker_program": entry_point,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": region,
    }
    if distributed:
        values["sagemaker_torch_distributed_enabled"] = True  # the toolkit then launches with torchrun
    return {name: json.dumps(value) for name, value in values.items()}


def decode_sagemaker_hyperparameters(encoded: Mapping[str, str]) -> dict[str, str]:
    """What the training toolkit hands the entry point: JSON-decoded, ``sagemaker_*`` removed."""
    decoded: dict[str, str] = {}
    for name, raw in encoded.items():
        if name.startswith("sagemaker_"):
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        decoded[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return decoded


def _channel(name: str, uri: str, data_type: str = "S3Prefix", **extra: str) -> dict[str, Any]:
    source = {"S3DataType": data_type, "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
    return {"ChannelName": name, "DataSource": {"S3DataSource": source}, "InputMode": "File", **extra}


def training_job_request(
    settings: TrainingJobSettings, dataset_version: str, channel_manifest_uri: str, region: str
) -> dict[str, Any]:
    name = settings.job_name(dataset_version)
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.max_runtime_seconds}
    if settings.use_spot:
        stopping["MaxWaitTimeInSeconds"] = settings.max_wait_seconds
    tags = {STACK_TAG: settings.job_prefix, "skiff:dataset-version": dataset_version, **settings.tags}
    channels = [_channel("train", channel_manifest_uri, "ManifestFile", ContentType="text/csv")]
    if settings.base_model_uri and settings.hyperparameters.model_family == "transformer":
        channels.append(_channel("base_model", settings.base_model_uri))  # train.py reads SM_CHANNEL_BASE_MODEL
    if settings.hyperparameters.teacher_version:  # train.py reads SM_CHANNEL_TEACHER: a registered artifact
        teacher = settings.hyperparameters.teacher_version
        channels.append(_channel("teacher", f"s3://{settings.artifacts_bucket}/{MODELS_PREFIX}{teacher}/"))
    if settings.network_isolation:
        channels.append(_channel(CODE_CHANNEL, settings.source_uri))
    output_key, volume_key = training_job_keys(settings.kms_key_arn, settings.instance_type)
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": settings.image_uri, "TrainingInputMode": "File"},
        "RoleArn": settings.role_arn,
        "HyperParameters": sagemaker_hyperparameters(
            settings.hyperparameters,
            ENTRY_POINT,
            CODE_CHANNEL_SOURCE if settings.network_isolation else settings.source_uri,
            region,
            # torchrun on every instance (SageMaker's torch_distributed) for the encoder family
            distributed=settings.hyperparameters.model_family == "transformer",
        ),
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{settings.artifacts_bucket}/jobs/", **output_key},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
            "VolumeSizeInGB": settings.volume_gb,
            **volume_key,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.use_spot,
        # No network inside the container: it installs the bundle's wheels with no index and
        # cannot send data anywhere; SageMaker itself still moves channels, checkpoints, output.
        "EnableNetworkIsolation": settings.network_isolation,
        # Several instances exchange gradients: encrypt that traffic (the stack's IAM demands it).
        "EnableInterContainerTrafficEncryption": settings.instance_count > 1,
        "CheckpointConfig": {
            "S3Uri": f"s3://{settings.artifacts_bucket}/checkpoints/{name}/",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        },
        "Environment": {"SKIFF_CODE_VERSION": code_version()},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def training_job_keys(key_arn: str | None, instance_type: str) -> tuple[dict[str, str], dict[str, str]]:
    """``OutputDataConfig`` and ``ResourceConfig`` entries that encrypt with ``key_arn``: the
    output always; the volume only where there is an EBS volume (SageMaker refuses a volume key
    on instance storage, which the hardware encrypts — :func:`skiff.aws.has_instance_storage`)."""
    if not key_arn:
        return {}, {}
    return {"KmsKeyId": key_arn}, {} if has_instance_storage(instance_type) else {"VolumeKmsKeyId": key_arn}


@dataclass(frozen=True)
class ScheduleOutcome:
    status: str  # "started", "queued", "already-started"
    dataset_version: str
    job_name: str | None = None


class TrainingScheduler:
    """One job at a time; the newest waiting dataset version starts when the running one ends."""

    dynamodb = LazyClient("dynamodb")
    sagemaker = LazyClient("sagemaker")
    logs = LazyClient("logs")

    def __init__(
        self, table: str, settings: TrainingJobSettings, sagemaker: Any = None, dynamodb: Any = None, logs: Any = None
    ) -> None:
        self.table, self.settings = table, settings
        self.sagemaker, self.dynamodb, self.logs = sagemaker, dynamodb, logs
        self._retention_checked = False

    def state(self) -> dict[str, Any]:
        return dynamo.get(self.dynamodb, self.table, "TRAINING", "STATE") or {}

    def schedule(self, dataset_version: str, revision: int, channel_manifest_uri: str) -> ScheduleOutcome:
        """Start training ``dataset_version`` now, or queue it behind the running job. Idempotent."""
        for attempt in range(MAX_ATTEMPTS):
            state = self.state()
            if revision <= state.get("last_started_revision", 0):
                return ScheduleOutcome("already-started", dataset_version)
            try:
                if state.get("running_job"):
                    if revision <= state.get("pending_revision", 0):
                        return ScheduleOutcome("queued", dataset_version)
                    self._update(
                        "SET pending_version = :v, pending_revision = :r, pending_channel = :c",
                        "running_job = :job AND (attribute_not_exists(pending_revision) OR pending_revision < :r)",
                        v=dataset_version,
                        r=revision,
                        c=channel_manifest_uri,
                        job=state["running_job"],
                    )
                    log.info("dataset %s waits for %s", dataset_version, state["running_job"])
                    return ScheduleOutcome("queued", dataset_version)
                job_name = self.settings.job_name(dataset_version)
                self._update(
                    "SET running_job = :job, running_version = :v, last_started_revision = :r",
                    "attribute_not_exists(running_job) AND "
                    "(attribute_not_exists(last_started_revision) OR last_started_revision < :r)",
                    job=job_name,
                    v=dataset_version,
                    r=revision,
                )
            except ClientError as exc:
                if not dynamo.cancelled(exc):
                    raise
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            self._launch(job_name, dataset_version, channel_manifest_uri, state.get("last_started_revision", 0))
            return ScheduleOutcome("started", dataset_version, job_name)
        raise ConflictError(f"expected to schedule {dataset_version} within {MAX_ATTEMPTS} attempts (got: races)")

    def _launch(self, job_name: str, dataset_version: str, channel_manifest_uri: str, previous_revision: int) -> None:
        region = self.sagemaker.meta.region_name
        request = training_job_request(self.settings, dataset_version, channel_manifest_uri, region)
        try:
            self.sagemaker.create_training_job(**request)
            log.info("started training job %s", job_name)
            self._limit_log_retention()
        except ClientError as exc:
            code, message = exc.response["Error"]["Code"], exc.response["Error"].get("Message", "")
            if code == "ResourceInUse" or "already exists" in message:
                log.info("training job %s already exists: a duplicate event; nothing to do", job_name)
                return
            # Could not start: free the slot so the next event (or a retry) can try again.
            self._update(
                "REMOVE running_job, running_version SET last_started_revision = last_started_revision - :one",
                "running_job = :job",
                job=job_name,
                one=1,
            )
            raise

    def _limit_log_retention(self) -> None:
        """SageMaker writes every job's logs to one account-wide group that it creates without
        retention, so they would be kept (and billed) forever. Give it the stack's retention when
        it has none; a retention someone already chose is left alone. Once per container; a
        failure here is logged, never stops training."""
        days = self.settings.log_retention_days
        if days is None or self._retention_checked:
            return
        self._retention_checked = True
        try:
            try:
                self.logs.create_log_group(logGroupName=TRAINING_LOG_GROUP)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise
            groups = self.logs.describe_log_groups(logGroupNamePrefix=TRAINING_LOG_GROUP)["logGroups"]
            group = next((g for g in groups if g["logGroupName"] == TRAINING_LOG_GROUP), {})
            if "retentionInDays" in group:
                return
            self.logs.put_retention_policy(logGroupName=TRAINING_LOG_GROUP, retentionInDays=days)
            log.info("%s now keeps logs for %d days (it kept them forever)", TRAINING_LOG_GROUP, days)
        except ClientError as exc:
            log.warning("could not set the retention of %s: %s", TRAINING_LOG_GROUP, exc)

    def finish(self, job_name: str) -> ScheduleOutcome | None:
        """The running job ended: free the slot and start the newest waiting version, if any."""
        try:
            response = self.dynamodb.update_item(
                TableName=self.table,
                Key=dynamo.to_item({"pk": "TRAINING", "sk": "STATE"}),
                UpdateExpression=(
                    "REMOVE running_job, running_version, pending_version, pending_revision, pending_channel"
                ),
                ConditionExpression="running_job = :job",
                ExpressionAttributeValues=dynamo.values(job=job_name),
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if dynamo.cancelled(exc):
                return None  # not the running job (a duplicate or a late event): nothing to free
            raise
        old = dynamo.from_item(response.get("Attributes", {}))
        if old.get("pending_version"):
            return self.schedule(old["pending_version"], old["pending_revision"], old["pending_channel"])
        return None

    def _update(self, expression: str, condition: str, **named: Any) -> None:
        self.dynamodb.update_item(
            TableName=self.table,
            Key=dynamo.to_item({"pk": "TRAINING", "sk": "STATE"}),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeValues=dynamo.values(**named),
        )


def training_event_pattern(prefix: str) -> dict[str, Any]:
    """The EventBridge pattern for the final states of this stack's jobs (infra and local stack).

    The name prefix alone would let a stack named "skiff-dev" hear "skiff-dev-2"'s jobs; the
    ``skiff:stack`` tag every job of this stack carries (and SageMaker's events repeat) is exact."""
    return {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {
            "TrainingJobName": [{"prefix": f"{prefix}-ds-"}],
            "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
            "Tags": {STACK_TAG: [prefix]},
        },
    }
