"""Retraining: the SageMaker role, the training source bundle, the upload trigger and the
completion handler wired to this stack's training-job events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.functions import FunctionArgs, ProductionFollowers, SkiffFunction
from infra.policies import assume_role, document, statement
from infra.settings import StackSettings
from skiff.retrain.launch import training_event_pattern


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
    table: aws.dynamodb.Table
    key: aws.kms.Key
    layer_arn: pulumi.Input[str]
    code_paths: dict[str, str]
    followers: ProductionFollowers = field(default_factory=ProductionFollowers)


def objects(bucket: aws.s3.Bucket, *prefixes: str) -> list[pulumi.Output[str]]:
    return [pulumi.Output.concat(bucket.arn, "/", prefix, "*") for prefix in prefixes]


def ecr_repository_arn(image_uri: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` -> the repository's ARN."""
    host, _, path = image_uri.partition("/")
    account, _, rest = host.partition(".dkr.ecr.")
    region = rest.split(".")[0]
    return f"arn:aws:ecr:{region}:{account}:repository/{path.split(':')[0].split('@')[0]}"


class Retraining(pulumi.ComponentResource):
    def __init__(self, name: str, args: RetrainingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Retraining", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        kms = statement(["kms:Decrypt", "kms:GenerateDataKey"], [args.key.arn])
        training_jobs_arn = f"arn:aws:sagemaker:{args.region}:{args.account_id}:training-job/{s.prefix}-*"

        self.source = aws.s3.BucketObjectv2(
            f"{name}-source",
            bucket=args.artifacts_bucket.id,
            key="source/sourcedir.tar.gz",
            source=pulumi.FileAsset(args.source_bundle_path),
            opts=child,
        )
        self.sagemaker_role = aws.iam.Role(
            f"{name}-sagemaker-role", assume_role_policy=assume_role("sagemaker.amazonaws.com"), opts=child
        )
        aws.iam.RolePolicy(
            f"{name}-sagemaker-policy",
            role=self.sagemaker_role.id,
            policy=document(
                [
                    statement(["s3:GetObject"], objects(args.data_bucket, "datasets/")),
                    statement(["s3:GetObject"], objects(args.artifacts_bucket, "source/", "base-models/")),
                    statement(
                        ["s3:GetObject", "s3:PutObject"], objects(args.artifacts_bucket, "jobs/", "checkpoints/")
                    ),
                    statement(
                        ["s3:ListBucket"],
                        [args.data_bucket.arn],
                        Condition={"StringLike": {"s3:prefix": ["datasets/*"]}},
                    ),
                    statement(
                        ["s3:ListBucket"],
                        [args.artifacts_bucket.arn],
                        Condition={"StringLike": {"s3:prefix": ["checkpoints/*", "jobs/*", "base-models/*"]}},
                    ),
                    kms,
                    statement(
                        ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                        [f"arn:aws:logs:{args.region}:{args.account_id}:log-group:/aws/sagemaker/TrainingJobs:*"],
                    ),
                    statement(
                        ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                        [ecr_repository_arn(args.image_uri)],
                    ),
                    # AWS requires "*" here: GetAuthorizationToken has no resource-level permissions.
                    statement(["ecr:GetAuthorizationToken"], ["*"]),
                    # AWS requires "*" for PutMetricData; the condition pins it to SageMaker's namespace.
                    statement(
                        ["cloudwatch:PutMetricData"],
                        ["*"],
                        Condition={"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}},
                    ),
                ]
            ),
            opts=child,
        )
        pass_role = statement(
            ["iam:PassRole"],
            [self.sagemaker_role.arn],
            Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
        table_rw = statement(
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:Query",
            ],
            [args.table.arn],
        )
        job_env: dict[str, pulumi.Input[str]] = {
            "SKIFF_REGISTRY_TABLE": args.table.name,
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
        start_jobs = statement(["sagemaker:CreateTrainingJob", "sagemaker:AddTags"], [training_jobs_arn])

        def function(short: str, statements: list[dict[str, Any]], env: dict[str, Any], **extra: Any) -> SkiffFunction:
            return SkiffFunction(
                f"{name}-{short.replace('_', '-')}",
                FunctionArgs(
                    prefix=s.prefix,
                    short_name=short,
                    code_path=args.code_paths[short],
                    layer_arn=args.layer_arn,
                    architecture=s.lambda_architecture,
                    environment=env,
                    statements=statements,
                    log_retention_days=s.log_retention_days,
                    **extra,
                ),
                opts=child,
            )

        self.upload_trigger = function(
            "upload_trigger",
            [
                statement(["s3:GetObject", "s3:DeleteObject"], objects(args.data_bucket, "incoming/")),
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
                start_jobs,
                pass_role,
                kms,
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
                start_jobs,
                pass_role,
                kms,
                *args.followers.statements,
            ],
            {
                **job_env,
                **args.followers.environment,
                "SKIFF_GATE_METRIC": s.gate_metric,
                "SKIFF_GATE_TOLERANCE": str(s.gate_tolerance),
                "SKIFF_GATE_BASELINE_MARGIN": str(s.gate_baseline_margin),
            },
            memory_mb=2048,
            timeout_seconds=900,
        )
        self.events_dlq = aws.sqs.Queue(
            f"{name}-training-events-dlq",
            message_retention_seconds=14 * 24 * 3600,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        self.rule = aws.cloudwatch.EventRule(
            f"{name}-training-job-state",
            description=f"{s.prefix}: final states of this stack's SageMaker training jobs",
            event_pattern=json.dumps(training_event_pattern(s.prefix)),
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-training-events-dlq-policy",
            queue_url=self.events_dlq.id,
            policy=document(
                [
                    statement(
                        ["sqs:SendMessage"],
                        [self.events_dlq.arn],
                        Principal={"Service": "events.amazonaws.com"},
                        Condition={"ArnEquals": {"aws:SourceArn": self.rule.arn}},
                    )
                ]
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-training-job-state-target",
            rule=self.rule.name,
            arn=self.completion.function.arn,
            dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(arn=self.events_dlq.arn),
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_event_age_in_seconds=3600, maximum_retry_attempts=8
            ),
            opts=child,
        )
        aws.lambda_.Permission(
            f"{name}-training-events-invoke",
            action="lambda:InvokeFunction",
            function=self.completion.function.name,
            principal="events.amazonaws.com",
            source_arn=self.rule.arn,
            opts=child,
        )
        self.register_outputs({"sagemaker_role_arn": self.sagemaker_role.arn, "rule_arn": self.rule.arn})
