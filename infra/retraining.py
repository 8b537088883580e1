"""Retraining: the SageMaker role, the training source bundle, the upload trigger and the
completion handler wired to this stack's training-job events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.functions import FunctionPlatform, ProductionFollowers, SkiffFunction, event_dead_letter_queue
from infra.notifications import Notifications
from infra.policies import (
    REGISTRY_READ_WRITE,
    objects,
    sagemaker_container_statements,
    service_role,
    statement,
)
from infra.settings import StackSettings
from infra.storage import source_object
from skiff.retrain.launch import TRAINING_LOG_GROUP, training_event_pattern, training_job_keys
from skiff.serve.lambda_alias import production_changed_pattern


@dataclass(frozen=True)
class RetrainingArgs:
    settings: StackSettings
    account_id: str
    region: str
    image_uri: str
    source_bundle_path: str
    data_bucket: aws.s3.Bucket
    artifacts_bucket: aws.s3.Bucket
    upload_queue: aws.sqs.Queue
    platform: FunctionPlatform
    followers: ProductionFollowers = field(default_factory=ProductionFollowers)
    notifications: Notifications | None = None  # the completion function tells it failures and verdicts


class Retraining(pulumi.ComponentResource):
    def __init__(self, name: str, args: RetrainingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Retraining", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        kms = statement(["kms:Decrypt", "kms:GenerateDataKey"], [args.platform.key.arn])
        training_jobs_arn = f"arn:aws:sagemaker:{args.region}:{args.account_id}:training-job/{s.prefix}-*"

        self.source = source_object(
            f"{name}-source", args.artifacts_bucket, "source/sourcedir.tar.gz", args.source_bundle_path, child
        )
        self.sagemaker_role = service_role(
            f"{name}-sagemaker",
            "sagemaker.amazonaws.com",
            [
                statement(["s3:GetObject"], objects(args.data_bucket, "datasets/")),
                # models/: a distillation job reads its teacher, a registered artifact (never writes one)
                statement(["s3:GetObject"], objects(args.artifacts_bucket, "source/", "base-models/", "models/")),
                statement(["s3:GetObject", "s3:PutObject"], objects(args.artifacts_bucket, "jobs/", "checkpoints/")),
                statement(
                    ["s3:ListBucket"],
                    [args.data_bucket.arn],
                    Condition={"StringLike": {"s3:prefix": ["datasets/*"]}},
                ),
                statement(
                    ["s3:ListBucket"],
                    [args.artifacts_bucket.arn],
                    Condition={"StringLike": {"s3:prefix": ["checkpoints/*", "jobs/*", "base-models/*", "models/*"]}},
                ),
                kms,
                *sagemaker_container_statements(
                    args.region,
                    args.account_id,
                    args.image_uri,
                    TRAINING_LOG_GROUP,
                    TRAINING_LOG_GROUP,
                ),
            ],
            child,
            source_account=args.account_id,
        )
        # SageMaker encrypts a job's EBS volume through a grant made on behalf of whoever starts the job.
        grant_for_jobs = statement(
            ["kms:CreateGrant"],
            [args.platform.key.arn],
            Condition={"Bool": {"kms:GrantIsForAWSResource": "true"}},
        )
        # SageMaker's training log group is account-wide and created without retention: the
        # launchers give it the stack's retention when it has none (skiff.retrain.launch).
        logs_arn = f"arn:aws:logs:{args.region}:{args.account_id}:log-group"
        training_logs_retention = [
            statement(["logs:CreateLogGroup", "logs:PutRetentionPolicy"], [f"{logs_arn}:{TRAINING_LOG_GROUP}:*"]),
            # AWS requires "*" for DescribeLogGroups (no resource-level permissions; parliament checks it).
            statement(["logs:DescribeLogGroups"], ["*"]),
        ]
        pass_role = statement(
            ["iam:PassRole"],
            [self.sagemaker_role.arn],
            Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
        table_rw = statement(list(REGISTRY_READ_WRITE), [args.platform.table.arn])
        job_env: dict[str, pulumi.Input[str]] = {
            "SKIFF_REGISTRY_TABLE": args.platform.table.name,
            "SKIFF_DATA_BUCKET": args.data_bucket.bucket,
            "SKIFF_ARTIFACTS_BUCKET": args.artifacts_bucket.bucket,
            "SKIFF_JOB_PREFIX": s.prefix,
            "SKIFF_SAGEMAKER_ROLE_ARN": self.sagemaker_role.arn,
            "SKIFF_TRAINING_IMAGE_URI": args.image_uri,
            "SKIFF_TRAINING_SOURCE_URI": pulumi.Output.concat(
                "s3://", args.artifacts_bucket.bucket, "/", self.source.key
            ),
            "SKIFF_TRAINING_INSTANCE_TYPE": s.training_instance_type,
            "SKIFF_TRAINING_INSTANCE_COUNT": str(s.training_instance_count),
            "SKIFF_TRAINING_USE_SPOT": str(s.use_spot).lower(),
            "SKIFF_TRAINING_NETWORK_ISOLATION": str(s.training_network_isolation).lower(),
            "SKIFF_KMS_KEY_ARN": args.platform.key.arn,
            "SKIFF_TRAINING_LOG_RETENTION_DAYS": str(s.log_retention_days),
            "SKIFF_TRAINING_MAX_RUNTIME_SECONDS": str(s.max_runtime_seconds),
            "SKIFF_TRAINING_MAX_WAIT_SECONDS": str(s.max_wait_seconds),
            "SKIFF_HYPERPARAMETERS": json.dumps(s.hyperparameters),
            "SKIFF_BASE_MODEL_URI": pulumi.Output.concat(
                "s3://", args.artifacts_bucket.bucket, "/base-models/", s.base_model, "/"
            )
            if s.base_model
            else "",
            # The source bundle's hash names the code that trained each model (manifests record it).
            "SKIFF_CODE_VERSION": self.source.etag,
        }
        # Guardrails in IAM, not only in our code: whoever holds these functions' roles can start
        # only this stack's jobs, on the configured instance type, isolated, encrypted with the
        # stack's key (and between instances when there are several).
        start_jobs = [
            statement(
                ["sagemaker:CreateTrainingJob"],
                [training_jobs_arn],
                Condition=training_job_conditions(s, args.platform.key.arn),
            ),
            statement(["sagemaker:AddTags"], [training_jobs_arn]),  # tags sent with the job
        ]

        def function(short: str, statements: list[dict[str, Any]], env: dict[str, Any], **extra: Any) -> SkiffFunction:
            return args.platform.function(name, short, env, statements, child, **extra)

        self.upload_trigger = function(
            "upload_trigger",
            [
                statement(["s3:GetObject", "s3:DeleteObject"], objects(args.data_bucket, "incoming/")),
                # Without ListBucket, S3 answers 403 instead of 404 for a key that is gone (a
                # redelivered upload already moved). No s3:prefix condition: reads of one key
                # carry no prefix, so a conditioned grant would not count for them.
                statement(["s3:ListBucket"], [args.data_bucket.arn]),
                statement(["s3:PutObject"], objects(args.data_bucket, "quarantine/", "rejections/", "datasets/")),
                statement(["s3:GetObject"], objects(args.data_bucket, "datasets/")),
                statement(
                    [
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:GetQueueAttributes",
                        "sqs:ChangeMessageVisibility",
                    ],
                    [args.upload_queue.arn],
                ),
                table_rw,
                *start_jobs,
                pass_role,
                kms,
                grant_for_jobs,
                *training_logs_retention,
            ],
            job_env,
            memory_mb=1024,
            timeout_seconds=900,
        )
        self.upload_mapping = aws.lambda_.EventSourceMapping(
            f"{name}-upload-mapping",
            event_source_arn=args.upload_queue.arn,
            function_name=self.upload_trigger.function.arn,
            batch_size=100,
            maximum_batching_window_in_seconds=s.upload_batch_window_seconds,
            function_response_types=["ReportBatchItemFailures"],
            scaling_config=aws.lambda_.EventSourceMappingScalingConfigArgs(maximum_concurrency=2),
            opts=child,
        )

        self.completion = function(
            "training_events",
            [
                statement(["s3:GetObject"], objects(args.artifacts_bucket, "jobs/", "models/")),
                statement(["s3:PutObject"], objects(args.artifacts_bucket, "models/")),
                statement(["s3:GetObject"], objects(args.data_bucket, "datasets/")),
                statement(["sagemaker:DescribeTrainingJob"], [training_jobs_arn]),
                table_rw,
                *start_jobs,
                pass_role,
                kms,
                grant_for_jobs,
                *training_logs_retention,
                *args.followers.statements,
                *(args.notifications.statements if args.notifications else []),
            ],
            {
                **job_env,
                **args.followers.environment,
                **(args.notifications.environment if args.notifications else {}),
                "SKIFF_GATE_METRIC": s.gate_metric,
                "SKIFF_GATE_TOLERANCE": str(s.gate_tolerance),
                "SKIFF_GATE_BASELINE_MARGIN": str(s.gate_baseline_margin),
            },
            memory_mb=2048,
            timeout_seconds=900,
        )
        self.rule = aws.cloudwatch.EventRule(
            f"{name}-training-job-state",
            description=f"{s.prefix}: final states of this stack's SageMaker training jobs",
            event_pattern=json.dumps(training_event_pattern(s.prefix)),
            opts=child,
        )
        self.events_dlq = event_dead_letter_queue(f"{name}-training-events-dlq", self.rule, args.account_id, child)
        self.completion.invoked_by(f"{name}-training-job-state", self.rule, child, dead_letters=self.events_dlq)
        # A change to production whose alias move had to wait for a published version (SnapStart
        # snapshots take minutes) is finished here, where the function may wait 15 minutes.
        production_rule = aws.cloudwatch.EventRule(
            f"{name}-production-changed",
            description=f"{s.prefix}: production changes whose inference alias move must wait",
            event_pattern=json.dumps(production_changed_pattern(s.prefix)),
            opts=child,
        )
        self.production_changed_dlq = event_dead_letter_queue(
            f"{name}-production-changed-dlq", production_rule, args.account_id, child
        )
        self.completion.invoked_by(
            f"{name}-production-changed", production_rule, child, dead_letters=self.production_changed_dlq
        )
        self.endpoint_events_dlq: aws.sqs.Queue | None = None
        if args.followers.event_pattern is not None:
            endpoint_rule = aws.cloudwatch.EventRule(
                f"{name}-gpu-endpoint-state",
                description=f"{s.prefix}: state changes of this stack's GPU endpoint",
                event_pattern=json.dumps(args.followers.event_pattern),
                opts=child,
            )
            self.endpoint_events_dlq = event_dead_letter_queue(
                f"{name}-gpu-endpoint-events-dlq", endpoint_rule, args.account_id, child
            )
            self.completion.invoked_by(
                f"{name}-gpu-endpoint-state", endpoint_rule, child, dead_letters=self.endpoint_events_dlq
            )
        self.register_outputs({"sagemaker_role_arn": self.sagemaker_role.arn, "rule_arn": self.rule.arn})


def training_job_conditions(s: StackSettings, key_arn: pulumi.Input[str]) -> dict[str, Any]:
    """IAM conditions that every CreateTrainingJob request of the stack must meet."""
    output_key, volume_key = training_job_keys("the stack's key", s.training_instance_type)
    keys = {"sagemaker:OutputKmsKey": output_key, "sagemaker:VolumeKmsKey": volume_key}
    conditions: dict[str, Any] = {
        "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": [s.training_instance_type]},
        # the same keys the request names (no volume key where the instance has instance storage)
        "ArnEquals": {name: key_arn for name, entry in keys.items() if entry},
    }
    required = {
        "sagemaker:NetworkIsolation": s.training_network_isolation,
        "sagemaker:InterContainerTrafficEncryption": s.training_instance_count > 1,
    }
    if any(required.values()):
        conditions["Bool"] = {key: "true" for key, wanted in required.items() if wanted}
    return conditions
