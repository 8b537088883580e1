"""The stack's configuration: one frozen dataclass read once from ``pulumi.Config("skiff")``.

Every key, its default and its meaning is listed in Pulumi.yaml's ``config`` section.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
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
    training_framework_version: str = "2.10"
    training_network_isolation: bool = True
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    predict_auth: str = "none"
    # benchmarks/bench_memory.py: the bag model peaks at 123 MiB, and 256 MB costs least a month
    # with SnapStart's two cached versions. A transformer-family model needs more (see README).
    inference_memory_mb: int = 256
    inference_timeout_seconds: int = 15
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    # SnapStart on the inference function's published versions (one per model version): a cold
    # start restores a snapshot taken after the model loaded. Off: plain cold starts (or
    # provisioned_concurrency, which keeps warm containers and bills for them by the hour).
    snapstart: bool = True
    throttle_rate_limit: float = 50.0
    throttle_burst_limit: int = 100
    table_deletion_protection: bool = True
    quarantine_expiry_days: int = 30
    checkpoint_expiry_days: int = 7
    job_output_expiry_days: int = 90
    access_log_expiry_days: int = 365
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
    tracing: bool = True
    notification_email: str | None = None
    gpu_endpoint: bool = False
    gpu_instance_type: str = "ml.g5.xlarge"
    gpu_inference_image_uri: str | None = None
    gpu_inference_framework_version: str = "2.6"
    base_model: str = ""

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
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

    @classmethod
    def from_config(cls, config: pulumi.Config | None = None) -> StackSettings:
        """Each field from its camelCase key (``log_retention_days`` <- ``skiff:logRetentionDays``),
        typed by the field's annotation; an absent key keeps the field's default."""
        c = config or pulumi.Config("skiff")
        readers = {"bool": c.get_bool, "int": c.get_int, "float": c.get_float}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            kind = spec.type.replace(" | None", "") if isinstance(spec.type, str) else spec.type
            value = readers.get(kind, c.get)(_config_key(spec.name))
            if value is not None and value != "":
                values[spec.name] = json.loads(value) if spec.name == "hyperparameters" else value
        values.setdefault("prefix", f"skiff-{pulumi.get_stack()}")
        return cls(**values)

    def resolve_training_image(self, region: str) -> str:
        """The configured image, or the PyTorch training DLC of ``training_framework_version`` for
        ``region`` and the instance type (GPU or CPU build), as the SageMaker SDK resolves it (offline)."""
        return self.training_image_uri or _pytorch_image(
            "training", self.training_framework_version, TRAINING_PYTHON, self.training_instance_type, region
        )

    def resolve_gpu_inference_image(self, region: str) -> str:
        """The configured image, or the PyTorch inference DLC of ``gpu_inference_framework_version``
        (its Python is the one the endpoint's wheels are built for)."""
        return self.gpu_inference_image_uri or _pytorch_image(
            "inference", self.gpu_inference_framework_version, ENDPOINT_PYTHON, self.gpu_instance_type, region
        )


def _pytorch_image(scope: str, version: str, python: str, instance_type: str, region: str) -> str:
    from sagemaker.core import image_uris  # sagemaker-core: ~3 s to import, needed only here

    setting = {"training": "trainingFrameworkVersion", "inference": "gpuInferenceFrameworkVersion"}[scope]
    try:
        return str(
            image_uris.retrieve(
                framework="pytorch",
                region=region,
                version=version,
                py_version=python,
                instance_type=instance_type,
                image_scope=scope,
            )
        )
    except ValueError as exc:
        uri = {"training": "trainingImageUri", "inference": "gpuInferenceImageUri"}[scope]
        raise ConfigError(
            f"expected skiff:{setting} to name a PyTorch {scope} image with {python} in {region} "
            f"(got: {version!r}: {exc}); or set skiff:{uri}"
        ) from exc


TRAINING_PYTHON = "py313"
"""The image's Python: the source bundle's wheels are built for it (skiff.packaging.lock.IMAGE)."""

ENDPOINT_PYTHON = "py312"
"""The inference image's Python: the endpoint's wheels are built for it (skiff.packaging.lock.ENDPOINT)."""


MAX_PREFIX = 40
"""Room for the longest name built from it: ``<prefix>-ds-000001-<suffix>`` SageMaker jobs (63)."""


def validate_prefix(prefix: str) -> None:
    """Resource names start with the prefix; S3, SageMaker and Lambda each accept only a subset of
    characters, so it is checked here, at preview, rule by rule."""
    rules = [
        (1 <= len(prefix) <= MAX_PREFIX, f"1 to {MAX_PREFIX} characters (got: {len(prefix)})"),
        (re.fullmatch(r"[a-z0-9-]*", prefix) is not None, "only lowercase letters, digits and hyphens"),
        (prefix[:1].isalpha() and prefix[:1].islower(), "a lowercase letter first"),
        (not prefix.endswith("-"), "no hyphen at the end"),
    ]
    for holds, rule in rules:
        if not holds:
            raise ConfigError(f"skiff:prefix should have {rule} (got: {prefix!r})")


def _config_key(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)
