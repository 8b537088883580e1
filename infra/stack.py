"""The whole system, assembled from components (called by __main__.py and by the tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.functions import FunctionPlatform, ProductionFollowers
from infra.gpu_endpoint import GpuEndpoint, GpuEndpointArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.notifications import Notifications, NotificationsArgs
from infra.registry_table import RegistryArgs, RegistryTable
from infra.retraining import Retraining, RetrainingArgs
from infra.serving import Serving, ServingArgs, canary_decisions, canary_watch, inference_followers
from infra.settings import StackSettings
from infra.storage import Storage, StorageArgs
from skiff.packaging.bundle import ROOT, build_all, build_endpoint_code, build_training_source
from skiff.serve.lambda_alias import deployment_event


@dataclass
class Stack:
    settings: StackSettings
    storage: Storage
    registry: RegistryTable
    retraining: Retraining
    serving: Serving
    monitoring: Monitoring
    notifications: Notifications
    outputs: dict[str, pulumi.Input[str]]


def build_stack(settings: StackSettings | None = None) -> Stack:
    s = settings or StackSettings.from_config()
    region = aws.config.region or "us-east-1"
    account_id = aws.get_caller_identity().account_id
    bundle_dir = (ROOT / s.bundle_dir).resolve() if not Path(s.bundle_dir).is_absolute() else Path(s.bundle_dir)
    report = build_all(bundle_dir, s.lambda_architecture)  # raises above Lambda's limits
    code_paths = {name: package.path for name, package in report.functions.items()}
    layer = aws.lambda_.LayerVersion(
        "dependencies",
        layer_name=f"{s.prefix}-dependencies",
        code=pulumi.FileArchive(report.layer.path),
        compatible_runtimes=["python3.12"],
        compatible_architectures=[s.lambda_architecture],
        description="onnxruntime, numpy, aws-lambda-powertools, pydantic, aws-xray-sdk (built by skiff bundle)",
    )

    storage = Storage(
        "storage",
        StorageArgs(
            s.prefix,
            s.quarantine_expiry_days,
            s.noncurrent_version_days,
            account_id=account_id,
            checkpoint_expiry_days=s.checkpoint_expiry_days,
            job_output_expiry_days=s.job_output_expiry_days,
            access_log_expiry_days=s.access_log_expiry_days,
        ),
    )
    notifications = Notifications(
        "notifications", NotificationsArgs(s.prefix, account_id, region, storage.key, s.notification_email)
    )
    registry = RegistryTable("registry", RegistryArgs(s.prefix, storage.key.arn, s.table_deletion_protection))
    gpu = None
    if s.gpu_endpoint:
        gpu = GpuEndpoint(
            "gpu-endpoint",
            GpuEndpointArgs(
                prefix=s.prefix,
                account_id=account_id,
                region=region,
                image_uri=s.resolve_gpu_inference_image(region),
                instance_type=s.gpu_instance_type,
                code_dir=str(build_endpoint_code(bundle_dir)),
                artifacts_bucket=storage.artifacts_bucket,
                key=storage.key,
                log_retention_days=s.log_retention_days,
            ),
        )
    followers = (
        inference_followers(s.prefix, region, account_id)
        + canary_watch(s.prefix, region, account_id, s.alarm_5xx_rate, s.alarm_p99_latency_ms)
        + (gpu.followers if gpu is not None else ProductionFollowers())
    )
    platform = FunctionPlatform(
        s.prefix,
        layer.arn,
        s.lambda_architecture,
        code_paths,
        s.log_retention_days,
        registry.table,
        storage.key,
        tracing=s.tracing,
    )
    retraining = Retraining(
        "retraining",
        RetrainingArgs(
            settings=s,
            account_id=account_id,
            region=region,
            image_uri=s.resolve_training_image(region),
            source_bundle_path=str(build_training_source(bundle_dir)),
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            upload_queue=storage.upload_queue,
            platform=platform,
            followers=followers + canary_decisions(s.prefix, region, account_id),
            notifications=notifications,
        ),
    )
    serving = Serving(
        "serving",
        ServingArgs(s, platform, storage.artifacts_bucket, followers, notifications, region, account_id),
    )
    # A published version freezes the code and settings the inference function had when it was
    # published, so after this deployment changed them production would go on serving the old
    # ones: the completion function publishes it again (skiff.serve.lambda_alias). Invoked once
    # per change of the function (its last modification moves whenever Pulumi updates it).
    aws.lambda_.Invocation(
        "republish-production",
        function_name=retraining.completion.function.name,
        input=json.dumps(deployment_event(s.prefix)),
        triggers={"inference_modified": serving.inference.function.last_modified},
        opts=pulumi.ResourceOptions(depends_on=[retraining, serving]),
    )
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            settings=s,
            api=serving.api,
            inference_function=serving.inference.function,
            queues={
                "upload": storage.upload_dlq,
                "training-events": retraining.events_dlq,
                "production-changed": retraining.production_changed_dlq,
                **({"gpu-endpoint-events": retraining.endpoint_events_dlq} if retraining.endpoint_events_dlq else {}),
            },
            platform=platform,
            artifacts_bucket=storage.artifacts_bucket,
            account_id=account_id,
            region=region,
            followers=followers,
            notifications=notifications,
        ),
    )
    outputs: dict[str, pulumi.Input[str]] = {
        "api_url": serving.url,
        "data_bucket": storage.data_bucket.bucket,
        "artifacts_bucket": storage.artifacts_bucket.bucket,
        "registry_table": registry.table.name,
        "notifications_topic_arn": notifications.topic.arn,
        "dashboard_url": f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards/dashboard/{s.prefix}",
        "access_log_bucket": storage.log_bucket.bucket,
        "job_prefix": s.prefix,
        "upload_command": pulumi.Output.concat("aws s3 cp data.csv s3://", storage.data_bucket.bucket, "/incoming/"),
    }
    if gpu is not None:
        outputs["gpu_endpoint_name"] = f"{s.prefix}-gpu"
    for key, value in outputs.items():
        pulumi.export(key, value)
    return Stack(s, storage, registry, retraining, serving, monitoring, notifications, outputs)
