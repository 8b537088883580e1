"""The stack's configuration: one frozen dataclass read once from ``pulumi.Config("skiff")``.

Every key, its default and its meaning is listed in Pulumi.yaml's ``config`` section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi

from skiff.errors import ConfigError
from skiff.model.hyperparameters import Hyperparameters


@dataclass(frozen=True)
class StackSettings:
    prefix: str
    lambda_architecture: str = "arm64"
    training_instance_type: str = "ml.g5.xlarge"
    training_instance_count: int = 1
    use_spot: bool = True
    max_runtime_seconds: int = 3600
    max_wait_seconds: int = 7200
    training_image_uri: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    predict_auth: str = "none"
    inference_memory_mb: int = 1024
    inference_timeout_seconds: int = 15
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    throttle_rate_limit: float = 50.0
    throttle_burst_limit: int = 100
    table_deletion_protection: bool = True
    quarantine_expiry_days: int = 30
    noncurrent_version_days: int = 30
    upload_batch_window_seconds: int = 30
    gate_metric: str = "accuracy"
    gate_tolerance: float = 0.0
    gate_baseline_margin: float = 0.02
    auto_rollback_window_seconds: int = 3600
    alarm_5xx_rate: float = 0.05
    alarm_p99_latency_ms: int = 1000
    bundle_dir: str = "build/lambda"
    log_retention_days: int = 30
    gpu_endpoint: bool = False
    gpu_instance_type: str = "ml.g5.xlarge"
    gpu_inference_image_uri: str | None = None
    base_model: str = ""

    def __post_init__(self) -> None:
        if self.lambda_architecture not in ("arm64", "x86_64"):
            raise ConfigError(f"skiff:lambdaArchitecture should be arm64 or x86_64 (got: {self.lambda_architecture!r})")
        if self.predict_auth not in ("none", "iam"):
            raise ConfigError(f"skiff:predictAuth should be none or iam (got: {self.predict_auth!r})")
        if self.use_spot and self.max_wait_seconds < self.max_runtime_seconds:
            raise ConfigError(
                f"skiff:maxWaitSeconds should be >= skiff:maxRuntimeSeconds with spot "
                f"(got: {self.max_wait_seconds} < {self.max_runtime_seconds})"
            )
        Hyperparameters.from_strings({k: str(v) for k, v in self.hyperparameters.items()})  # validates names
        if self.gpu_endpoint and not self.gpu_inference_image_uri:
            raise ConfigError(
                "expected skiff:gpuInferenceImageUri with skiff:gpuEndpoint true (got: none); "
                "use a PyTorch inference DLC (GPU) URI for your region"
            )

    @classmethod
    def from_config(cls, config: pulumi.Config | None = None) -> StackSettings:
        c = config or pulumi.Config("skiff")
        defaults = cls(prefix="unused")

        def get(key: str, kind: type, default: Any) -> Any:
            if kind is bool:
                value = c.get_bool(key)
            elif kind is int:
                value = c.get_int(key)
            elif kind is float:
                value = c.get_float(key)
            else:
                value = c.get(key)
            return default if value is None else value

        hyperparameters = c.get("hyperparameters")
        return cls(
            prefix=c.get("prefix") or f"skiff-{pulumi.get_stack()}",
            lambda_architecture=get("lambdaArchitecture", str, defaults.lambda_architecture),
            training_instance_type=get("trainingInstanceType", str, defaults.training_instance_type),
            training_instance_count=get("trainingInstanceCount", int, defaults.training_instance_count),
            use_spot=get("useSpot", bool, defaults.use_spot),
            max_runtime_seconds=get("maxRuntimeSeconds", int, defaults.max_runtime_seconds),
            max_wait_seconds=get("maxWaitSeconds", int, defaults.max_wait_seconds),
            training_image_uri=c.get("trainingImageUri"),
            hyperparameters=json.loads(hyperparameters) if hyperparameters else {},
            predict_auth=get("predictAuth", str, defaults.predict_auth),
            inference_memory_mb=get("inferenceMemoryMb", int, defaults.inference_memory_mb),
            inference_timeout_seconds=get("inferenceTimeoutSeconds", int, defaults.inference_timeout_seconds),
            reserved_concurrency=c.get_int("reservedConcurrency"),
            provisioned_concurrency=get("provisionedConcurrency", int, defaults.provisioned_concurrency),
            throttle_rate_limit=get("throttleRateLimit", float, defaults.throttle_rate_limit),
            throttle_burst_limit=get("throttleBurstLimit", int, defaults.throttle_burst_limit),
            table_deletion_protection=get("tableDeletionProtection", bool, defaults.table_deletion_protection),
            quarantine_expiry_days=get("quarantineExpiryDays", int, defaults.quarantine_expiry_days),
            noncurrent_version_days=get("noncurrentVersionDays", int, defaults.noncurrent_version_days),
            upload_batch_window_seconds=get("uploadBatchWindowSeconds", int, defaults.upload_batch_window_seconds),
            gate_metric=get("gateMetric", str, defaults.gate_metric),
            gate_tolerance=get("gateTolerance", float, defaults.gate_tolerance),
            gate_baseline_margin=get("gateBaselineMargin", float, defaults.gate_baseline_margin),
            auto_rollback_window_seconds=get("autoRollbackWindowSeconds", int, defaults.auto_rollback_window_seconds),
            alarm_5xx_rate=get("alarm5xxRate", float, defaults.alarm_5xx_rate),
            alarm_p99_latency_ms=get("alarmP99LatencyMs", int, defaults.alarm_p99_latency_ms),
            bundle_dir=get("bundleDir", str, defaults.bundle_dir),
            log_retention_days=get("logRetentionDays", int, defaults.log_retention_days),
            gpu_endpoint=get("gpuEndpoint", bool, defaults.gpu_endpoint),
            gpu_instance_type=get("gpuInstanceType", str, defaults.gpu_instance_type),
            gpu_inference_image_uri=c.get("gpuInferenceImageUri"),
            base_model=c.get("baseModel") or "",
        )

    def resolve_training_image(self, region: str) -> str:
        """The configured image, or the PyTorch training DLC for ``region`` from the SageMaker SDK."""
        if self.training_image_uri:
            return self.training_image_uri
        try:
            from sagemaker.core import image_uris  # ~1 GB SDK: only needed when no image is configured
        except ImportError as exc:
            raise ConfigError(
                "expected skiff:trainingImageUri to be set, or the sagemaker package to resolve it "
                "(got: neither); e.g. pulumi config set skiff:trainingImageUri <PyTorch training DLC URI>"
            ) from exc
        return str(
            image_uris.retrieve(
                framework="pytorch",
                region=region,
                version="2.5",
                py_version="py311",
                instance_type=self.training_instance_type,
                image_scope="training",
            )
        )
