"""An optional SageMaker real-time endpoint on a GPU instance that follows production.

Pulumi creates the endpoint's role and tells the functions its name; the endpoint itself is
created here, at the first promotion, because which model it serves changes at run time
(Pulumi would revert an endpoint config that promotions move). Each version gets its own
Model and EndpointConfig (named after the version, never deleted in place), and the
endpoint is created or updated to point at it — SageMaker switches traffic only once the new
instances are healthy, so the endpoint keeps answering during the move.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from skiff import settings as env
from skiff.aws import LazyClient
from skiff.errors import ArtifactError
from skiff.registry.table import ModelVersion, Registry

log = logging.getLogger(__name__)

SERVING_ENTRY = "serve.py"


@dataclass(frozen=True)
class GpuEndpointSettings:
    endpoint_name: str
    role_arn: str
    image_uri: str
    source_uri: str  # sourcedir with skiff/ and serve.py (onnxruntime-gpu in requirements.txt)
    instance_type: str = "ml.g5.xlarge"

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
            source_uri=env.require("SKIFF_GPU_SERVING_SOURCE_URI", e),
            instance_type=e.get("SKIFF_GPU_INSTANCE_TYPE") or "ml.g5.xlarge",
        )


class GpuEndpoint:
    sagemaker = LazyClient("sagemaker")

    def __init__(self, settings: GpuEndpointSettings, sagemaker: Any = None) -> None:
        self.settings = settings
        self.sagemaker = sagemaker

    def resource_name(self, version: str) -> str:
        return f"{self.settings.endpoint_name}-{version}"[:63]  # SageMaker names: at most 63 characters

    def model_request(self, version: ModelVersion) -> dict[str, Any]:
        model_data = version.lineage.get("model_artifacts")
        if not model_data:
            raise ArtifactError(f"expected version {version.version} to record its model.tar.gz (got: none)")
        return {
            "ModelName": self.resource_name(version.version),
            "ExecutionRoleArn": self.settings.role_arn,
            "PrimaryContainer": {
                "Image": self.settings.image_uri,
                "ModelDataUrl": model_data,
                "Environment": {
                    "SAGEMAKER_PROGRAM": SERVING_ENTRY,
                    "SAGEMAKER_SUBMIT_DIRECTORY": self.settings.source_uri,
                    "SKIFF_MODEL_VERSION": version.version,
                },
            },
            "Tags": [{"Key": "skiff:model-version", "Value": version.version}],
        }

    def follow(self, version: ModelVersion) -> str:
        """Point the endpoint at ``version``; returns the endpoint config name now in use."""
        name = self.resource_name(version.version)
        self._create_once(self.sagemaker.create_model, **self.model_request(version))
        self._create_once(
            self.sagemaker.create_endpoint_config,
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": self.settings.instance_type,
                    "InitialInstanceCount": 1,
                }
            ],
        )
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
    """After production changed: move the GPU endpoint too. Failures are logged, not raised —
    the registry (and the Lambda serving from it) is the source of truth; an alarm on the
    logged metric tells someone the endpoint lags."""
    if endpoint is None:
        return None
    current = registry.production()
    if current is None:
        return None
    try:
        return endpoint.follow(current)
    except (ClientError, ArtifactError) as exc:
        log.error("GPU endpoint did not follow production %s: %s", current.version, exc)
        return None


def endpoint_from_env() -> GpuEndpoint | None:
    settings = GpuEndpointSettings.from_env()
    return GpuEndpoint(settings) if settings is not None else None
