"""One Lambda function with its own least-privilege role and log group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.policies import assume_role, document, service_may_send, statement


@dataclass(frozen=True)
class FunctionArgs:
    prefix: str
    short_name: str  # "inference" -> function "<prefix>-inference", handler functions.inference.handler
    code_path: str
    layer_arn: pulumi.Input[str]
    architecture: str
    environment: Mapping[str, pulumi.Input[str]]
    statements: Sequence[dict[str, Any]]
    memory_mb: int = 512
    timeout_seconds: int = 30
    reserved_concurrency: int | None = None
    log_retention_days: int = 30
    tracing: bool = True  # X-Ray active tracing, and Powertools' Tracer in the handler
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FunctionPlatform:
    """What every Lambda function of a stack shares: its prefix, code packages, layer,
    architecture and log retention, and the registry table and key most of them use."""

    prefix: str
    layer_arn: pulumi.Input[str]
    architecture: str
    code_paths: Mapping[str, str]
    log_retention_days: int
    table: aws.dynamodb.Table
    key: aws.kms.Key
    tracing: bool = True

    def function(
        self,
        component: str,
        short_name: str,
        environment: Mapping[str, pulumi.Input[str]],
        statements: Sequence[dict[str, Any]],
        opts: pulumi.ResourceOptions,
        **extra: Any,
    ) -> SkiffFunction:
        """``short_name``'s function, as a child of ``component``."""
        return SkiffFunction(
            f"{component}-{short_name.replace('_', '-')}",
            FunctionArgs(
                prefix=self.prefix,
                short_name=short_name,
                code_path=self.code_paths[short_name],
                layer_arn=self.layer_arn,
                architecture=self.architecture,
                environment=environment,
                statements=statements,
                log_retention_days=self.log_retention_days,
                tracing=self.tracing,
                **extra,
            ),
            opts=opts,
        )


@dataclass
class ProductionFollowers:
    """What a function that changes production adds to its environment and policy (the GPU
    endpoint), and the events (``event_pattern``) the completion function hears about it."""

    environment: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    statements: list[dict[str, Any]] = field(default_factory=list)
    event_pattern: dict[str, Any] | None = None

    def __add__(self, other: ProductionFollowers) -> ProductionFollowers:
        """Both followers' needs (one event pattern at most: the GPU endpoint's)."""
        return ProductionFollowers(
            {**self.environment, **other.environment},
            [*self.statements, *other.statements],
            self.event_pattern or other.event_pattern,
        )


class SkiffFunction(pulumi.ComponentResource):
    def __init__(self, name: str, args: FunctionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Function", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function_name = f"{args.prefix}-{args.short_name.replace('_', '-')}"
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/aws/lambda/{function_name}", retention_in_days=args.log_retention_days, opts=child
        )
        self.role = aws.iam.Role(f"{name}-role", assume_role_policy=assume_role("lambda.amazonaws.com"), opts=child)
        self.policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=self.role.id,
            policy=document(
                [
                    statement(
                        ["logs:CreateLogStream", "logs:PutLogEvents"],
                        [pulumi.Output.concat(self.log_group.arn, ":*")],
                    ),
                    *args.statements,
                    # AWS requires "*" for these: X-Ray has no resource-level permissions.
                    *(
                        [statement(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"])]
                        if args.tracing
                        else []
                    ),
                ]
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            role=self.role.arn,
            runtime=aws.lambda_.Runtime.PYTHON3D12,
            architectures=[args.architecture],
            handler=f"functions.{args.short_name}.handler.lambda_handler",
            code=pulumi.FileArchive(args.code_path),
            layers=[args.layer_arn],
            memory_size=args.memory_mb,
            timeout=args.timeout_seconds,
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={
                    "POWERTOOLS_SERVICE_NAME": function_name,
                    "POWERTOOLS_TRACE_DISABLED": str(not args.tracing).lower(),
                    "SKIFF_STACK": args.prefix,
                    **args.environment,
                }
            ),
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active" if args.tracing else "PassThrough"),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=self.log_group.name),
            **args.extra,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.policy, self.log_group]),
        )
        self.register_outputs({"function_name": self.function.name, "function_arn": self.function.arn})

    def invoked_by(
        self,
        name: str,
        rule: aws.cloudwatch.EventRule,
        opts: pulumi.ResourceOptions,
        dead_letters: aws.sqs.Queue | None = None,
    ) -> None:
        """Deliver ``rule``'s events to this function; EventBridge may invoke it for that rule only.

        With ``dead_letters`` (see :func:`event_dead_letter_queue`), a failed delivery is retried
        for an hour, then the event is kept there instead of dropped."""
        target: dict[str, Any] = {}
        if dead_letters is not None:
            target["dead_letter_config"] = aws.cloudwatch.EventTargetDeadLetterConfigArgs(arn=dead_letters.arn)
            target["retry_policy"] = aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_event_age_in_seconds=3600, maximum_retry_attempts=8
            )
        aws.cloudwatch.EventTarget(f"{name}-target", rule=rule.name, arn=self.function.arn, opts=opts, **target)
        aws.lambda_.Permission(
            f"{name}-invoke",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=opts,
        )


def event_dead_letter_queue(
    name: str, rule: aws.cloudwatch.EventRule, account_id: str, opts: pulumi.ResourceOptions
) -> aws.sqs.Queue:
    """An encrypted queue that only ``rule`` (of this account) may send undeliverable events to."""
    queue = aws.sqs.Queue(name, message_retention_seconds=14 * 24 * 3600, sqs_managed_sse_enabled=True, opts=opts)
    aws.sqs.QueuePolicy(
        f"{name}-policy",
        queue_url=queue.id,
        policy=document([service_may_send(queue.arn, "events.amazonaws.com", rule.arn, account_id)]),
        opts=opts,
    )
    return queue
