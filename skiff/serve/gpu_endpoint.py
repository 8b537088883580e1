"""An optional SageMaker real-time endpoint on a GPU instance that follows production.

Pulumi creates the endpoint's role, uploads its ``code/`` (skiff.packaging.bundle.
build_endpoint_code) and tells the functions its name; the endpoint itself is created here, at
the first promotion, because which model it serves changes at run time (Pulumi would revert an
endpoint config that promotions move).

The model is the version's published folder, as the PyTorch inference toolkit expects a model
directory: the artifact files plus ``code/inference.py``, ``code/requirements.txt`` and
``code/wheels/``, copied in (server-side) at the first promotion. SageMaker downloads the folder
as it is (``S3DataType=S3Prefix``, ``CompressionType=None``: no tarball to build), and the
container runs network-isolated, installing only the wheels it carries.

Each version gets its own Model and EndpointConfig (named after the version, never deleted in
place), and the endpoint is created or updated to point at it — SageMaker switches traffic only
once the new instances are healthy, so the endpoint keeps answering during the move. The
registry is the record and the Lambda serves production at once; the endpoint follows within
minutes, and an update that fails is reported (skiff.retrain.endpoint_events).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from skiff import settings as env
from skiff.aws import LazyClient, has_instance_storage
from skiff.errors import ArtifactError
from skiff.notify import Notice
from skiff.registry.artifacts import parse_s3_uri
from skiff.registry.table import ModelVersion, Registry

log = logging.getLogger(__name__)

SERVING_ENTRY = "inference.py"  # the toolkit's default module, in the model's code/


@dataclass(frozen=True)
class GpuEndpointSettings:
    endpoint_name: str
    role_arn: str
    image_uri: str
    code_uri: str  # s3://bucket/prefix/ holding inference.py, requirements.txt, wheels/
    instance_type: str = "ml.g5.xlarge"
    kms_key_arn: str | None = None  # the instance's volume, unless it has instance storage

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GpuEndpointSettings | None:
        """None unless the stack enabled the GPU endpoint (SKIFF_GPU_ENDPOINT_NAME set)."""
        e = os.environ if environ is None else environ
        if not e.get("SKIFF_GPU_ENDPOINT_NAME"):
            return None
        return cls(
            endpoint_name=e["SKIFF_GPU_ENDPOINT_NAME"],
            role_arn=env.require("SKIFF_GPU_ENDPOINT_ROLE_ARN", e),
            image_uri=env.require("SKIFF_GPU_INFERENCE_IMAGE_URI", e),
            code_uri=env.require("SKIFF_GPU_ENDPOINT_CODE_URI", e),
            instance_type=e.get("SKIFF_GPU_INSTANCE_TYPE") or "ml.g5.xlarge",
            kms_key_arn=e.get("SKIFF_KMS_KEY_ARN") or None,
        )


class GpuEndpoint:
    sagemaker = LazyClient("sagemaker")
    s3 = LazyClient("s3")

    def __init__(self, settings: GpuEndpointSettings, sagemaker: Any = None, s3: Any = None) -> None:
        self.settings = settings
        self.sagemaker, self.s3 = sagemaker, s3

    def resource_name(self, version: str) -> str:
        return f"{self.settings.endpoint_name}-{version}"[:63]  # SageMaker names: at most 63 characters

    def model_request(self, version: ModelVersion) -> dict[str, Any]:
        return {
            "ModelName": self.resource_name(version.version),
            "ExecutionRoleArn": self.settings.role_arn,
            "PrimaryContainer": {
                "Image": self.settings.image_uri,
                "ModelDataSource": {
                    "S3DataSource": {
                        "S3Uri": self._model_folder(version),
                        "S3DataType": "S3Prefix",
                        "CompressionType": "None",
                    }
                },
                "Environment": {"SAGEMAKER_PROGRAM": SERVING_ENTRY, "SKIFF_MODEL_VERSION": version.version},
            },
            # The container reaches no network: it installs the wheels in code/ and nothing else.
            "EnableNetworkIsolation": True,
            "Tags": [{"Key": "skiff:model-version", "Value": version.version}],
        }

    def endpoint_config_request(self, version: ModelVersion) -> dict[str, Any]:
        name = self.resource_name(version.version)
        request: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": self.settings.instance_type,
                    "InitialInstanceCount": 1,
                }
            ],
        }
        if self.settings.kms_key_arn and not has_instance_storage(self.settings.instance_type):
            request["KmsKeyId"] = self.settings.kms_key_arn  # SageMaker refuses it for instance storage
        return request

    @staticmethod
    def _model_folder(version: ModelVersion) -> str:
        if not version.artifact_uri or not version.artifact_uri.startswith("s3://"):
            raise ArtifactError(
                f"expected version {version.version} to record its s3:// folder (got: {version.artifact_uri!r})"
            )
        return version.artifact_uri.rstrip("/") + "/"

    def stage_code(self, version: ModelVersion) -> list[str]:
        """Copy the endpoint's code/ into the version's folder (server-side, once); its keys."""
        bucket, folder = parse_s3_uri(self._model_folder(version))
        code_bucket, code_prefix = parse_s3_uri(self.settings.code_uri.rstrip("/") + "/")
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=code_bucket, Prefix=code_prefix)
        sources = [o["Key"] for page in pages for o in page.get("Contents", [])]
        if not any(key.endswith("/" + SERVING_ENTRY) for key in sources):
            raise ArtifactError(f"expected the endpoint's code at {self.settings.code_uri} (got: no {SERVING_ENTRY})")
        staged = []
        for key in sources:
            target = f"{folder}code/{key[len(code_prefix) :]}"
            # CRC32: a full-object checksum, so a copy of a multipart upload reads back intact (FACTS.md).
            self.s3.copy_object(
                Bucket=bucket, Key=target, CopySource={"Bucket": code_bucket, "Key": key}, ChecksumAlgorithm="CRC32"
            )
            staged.append(target)
        return staged

    def follow(self, version: ModelVersion) -> str:
        """Point the endpoint at ``version``; returns the endpoint config name now in use."""
        name = self.resource_name(version.version)
        self.stage_code(version)
        self._create_once(self.sagemaker.create_model, **self.model_request(version))
        self._create_once(self.sagemaker.create_endpoint_config, **self.endpoint_config_request(version))
        try:
            self.sagemaker.describe_endpoint(EndpointName=self.settings.endpoint_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
            self.sagemaker.create_endpoint(EndpointName=self.settings.endpoint_name, EndpointConfigName=name)
            log.info("created GPU endpoint %s serving %s", self.settings.endpoint_name, version.version)
            return name
        self.sagemaker.update_endpoint(EndpointName=self.settings.endpoint_name, EndpointConfigName=name)
        log.info("moving GPU endpoint %s to %s", self.settings.endpoint_name, version.version)
        return name

    @staticmethod
    def _create_once(create: Any, **request: Any) -> None:
        try:
            create(**request)
        except ClientError as exc:
            message = exc.response["Error"].get("Message", "")
            if "already exist" not in message:
                raise  # a repeated promotion of the same version reuses what it created before


def follow_production(registry: Registry, endpoint: GpuEndpoint | None) -> str | None:
    """After production changed: move the GPU endpoint too, and record that on the version.

    The registry is the record and the Lambda serves production at once; the endpoint follows
    (SageMaker takes minutes). A request it refuses is recorded as failed here; an update that
    fails later is recorded by :func:`endpoint_state_changed`. Nothing here raises: production
    has already moved."""
    if endpoint is None:
        return None
    current = registry.production()
    if current is None:
        return None
    try:
        config = endpoint.follow(current)
    except (ClientError, ArtifactError) as exc:
        log.error("GPU endpoint did not follow production %s: %s", current.version, exc)
        registry.record_endpoint(current.version, "failed", f"the endpoint was not asked to serve it: {exc}")
        return None
    registry.record_endpoint(current.version, "updating", f"endpoint config {config}")
    return config


ENDPOINT_EVENT = "SageMaker Endpoint State Change"
_IN_PROGRESS = {"CREATING", "UPDATING", "SYSTEMUPDATING", "ROLLINGBACK", "DELETING"}
_FAILED = {"FAILED", "UPDATEROLLBACKFAILED", "OUTOFSERVICE"}


def endpoint_event_pattern(endpoint_name: str) -> dict[str, Any]:
    """EventBridge pattern for this stack's endpoint's state changes (infra and tests)."""
    return {"source": ["aws.sagemaker"], "detail-type": [ENDPOINT_EVENT], "detail": {"EndpointName": [endpoint_name]}}


@dataclass(frozen=True)
class EndpointOutcome:
    state: str  # "serving", "failed", "updating", "ignored"
    version: str | None = None
    reason: str | None = None

    def notice(self, endpoint_name: str) -> Notice | None:
        if self.state != "failed":
            return None
        return Notice(
            "endpoint-failed",
            f"GPU endpoint {endpoint_name} failed to serve production {self.version}; the Lambda API serves it",
            {"version": self.version, "endpoint": endpoint_name, "reason": self.reason},
        )


def endpoint_state_changed(registry: Registry, endpoint: GpuEndpoint, detail: Mapping[str, Any]) -> EndpointOutcome:
    """An endpoint state event: record on production's version whether the endpoint now serves it.

    The event is only a nudge: the endpoint is described again (events can arrive late, twice,
    or out of order), and SageMaker's own FailureReason says why an update failed (a failed
    update leaves the endpoint InService on its previous config)."""
    name = endpoint.settings.endpoint_name
    if detail.get("EndpointName") != name:
        return EndpointOutcome("ignored", reason=f"not this stack's endpoint: {detail.get('EndpointName')!r}")
    current = registry.production()
    if current is None:
        return EndpointOutcome("ignored", reason="no production version")
    described = endpoint.sagemaker.describe_endpoint(EndpointName=name)
    status = str(described["EndpointStatus"]).replace("_", "").upper()
    wanted = endpoint.resource_name(current.version)
    reason = described.get("FailureReason")
    if status in _IN_PROGRESS:
        return EndpointOutcome("updating", current.version)
    if status == "INSERVICE" and described.get("EndpointConfigName") == wanted:
        if (current.gpu_endpoint or {}).get("state") != "serving":
            registry.record_endpoint(current.version, "serving", f"endpoint config {wanted} in service")
        return EndpointOutcome("serving", current.version)
    if status in _FAILED or reason:
        why = reason or f"endpoint status {described['EndpointStatus']}"
        recorded = current.gpu_endpoint or {}
        if (recorded.get("state"), recorded.get("reason")) == ("failed", why):
            return EndpointOutcome("ignored", current.version, "already recorded")  # a repeated event
        registry.record_endpoint(current.version, "failed", why)
        return EndpointOutcome("failed", current.version, why)
    return EndpointOutcome("updating", current.version)  # in service on an older config, no failure yet


def endpoint_from_env() -> GpuEndpoint | None:
    settings = GpuEndpointSettings.from_env()
    return GpuEndpoint(settings) if settings is not None else None
