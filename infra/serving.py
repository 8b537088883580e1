"""Serving: the inference and registry-admin functions behind one HTTP API.

API Gateway invokes the inference function's alias ``live``. Pulumi creates the alias (on
``$LATEST``, or on the version it publishes for provisioned concurrency) and then leaves where it
points to the stack itself: each model version gets its own published version
(skiff.serve.lambda_alias), and whoever changes production moves the alias, so a later
``pulumi up`` must not move it back (``ignore_changes``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.functions import FunctionPlatform, ProductionFollowers
from infra.monitoring import SERVING_ALARMS, canary_alarm_arns
from infra.notifications import Notifications
from infra.policies import REGISTRY_READ_WRITE, assume_role, document, statement
from infra.settings import StackSettings

ADMIN_ROUTES = (
    "GET /models",
    "GET /models/production",
    "GET /models/{version}",
    "POST /models/{version}/promote",
    "POST /models/{version}/canary",
    "POST /canary/abort",
    "POST /rollback",
)
PREDICT_ROUTE = "POST /predict"
INFERENCE_ALIAS = "live"


def inference_followers(prefix: str, region: str, account_id: str) -> ProductionFollowers:
    """What a function that changes production needs to move the inference alias: to publish a
    version bound to a model version (by setting the variable on $LATEST first), to read and move
    the alias, to delete versions no longer needed, and to announce a move that must wait."""
    function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{prefix}-inference"
    return ProductionFollowers(
        environment={"SKIFF_INFERENCE_FUNCTION": f"{prefix}-inference", "SKIFF_INFERENCE_ALIAS": INFERENCE_ALIAS},
        statements=[
            statement(
                [
                    "lambda:GetFunctionConfiguration",
                    "lambda:UpdateFunctionConfiguration",
                    "lambda:PublishVersion",
                    "lambda:ListVersionsByFunction",
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                    "lambda:DeleteFunction",
                ],
                [function_arn, f"{function_arn}:*"],
            ),
            statement(["events:PutEvents"], [f"arn:aws:events:{region}:{account_id}:event-bus/default"]),
        ],
    )


def completion_arn(prefix: str, region: str, account_id: str) -> str:
    """The completion function's ARN, known before it exists (no dependency cycle)."""
    return f"arn:aws:lambda:{region}:{account_id}:function:{prefix}-training-events"


def canary_decisions(prefix: str, region: str, account_id: str) -> ProductionFollowers:
    """What the completion function needs to end a canary: the serving alarms' states and the
    canary's own invocations and errors (Lambda's metrics per executed version)."""
    alarms = [f"{prefix}-{short}" for short in SERVING_ALARMS]
    return ProductionFollowers(
        environment={
            "SKIFF_CANARY_TARGET_ARN": completion_arn(prefix, region, account_id),
            "SKIFF_SERVING_ALARMS": ",".join(alarms),
        },
        statements=[
            statement(
                ["cloudwatch:DescribeAlarms"], [f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{a}" for a in alarms]
            ),
            # GetMetricStatistics has no resource type: IAM takes only "*" for it.
            statement(["cloudwatch:GetMetricStatistics"], ["*"]),
        ],
    )


def canary_watch(
    prefix: str, region: str, account_id: str, max_error_rate: float, max_p99_latency_ms: float
) -> ProductionFollowers:
    """What a function that moves the inference alias needs to keep the canary alarms in step
    with it, at the serving alarms' thresholds."""
    return ProductionFollowers(
        environment={
            "SKIFF_CANARY_ALARMS": "true",
            "SKIFF_CANARY_MAX_ERROR_RATE": str(max_error_rate),
            "SKIFF_CANARY_MAX_P99_MS": str(max_p99_latency_ms),
        },
        statements=[
            statement(
                ["cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"],
                canary_alarm_arns(prefix, region, account_id),
            )
        ],
    )


@dataclass(frozen=True)
class ServingArgs:
    settings: StackSettings
    platform: FunctionPlatform
    artifacts_bucket: aws.s3.Bucket
    followers: ProductionFollowers = field(default_factory=ProductionFollowers)
    notifications: Notifications | None = None  # promotions and rollbacks by hand are told to it
    region: str = "us-east-1"
    account_id: str = "123456789012"


class Serving(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Serving", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        table, key = args.platform.table, args.platform.key
        kms = statement(["kms:Decrypt"], [key.arn])
        read_table = statement(["dynamodb:GetItem", "dynamodb:Query"], [table.arn])
        common = {"SKIFF_REGISTRY_TABLE": table.name, "SKIFF_ARTIFACTS_BUCKET": args.artifacts_bucket.bucket}
        provisioned = s.provisioned_concurrency > 0

        self.inference = args.platform.function(
            name,
            "inference",
            common,
            [
                read_table,
                kms,
                statement(["s3:GetObject"], [pulumi.Output.concat(args.artifacts_bucket.arn, "/models/*")]),
            ],
            child,
            memory_mb=s.inference_memory_mb,
            timeout_seconds=s.inference_timeout_seconds,
            reserved_concurrency=s.reserved_concurrency,
            extra={
                # Provisioned concurrency needs a published version under the alias from the start.
                **({"publish": True} if provisioned else {}),
                # Lambda refuses SnapStart together with provisioned concurrency: warm containers win.
                **(
                    {"snap_start": aws.lambda_.FunctionSnapStartArgs(apply_on="PublishedVersions")}
                    if s.snapstart and not provisioned
                    else {}
                ),
            },
        )
        self.alias = aws.lambda_.Alias(
            f"{name}-inference-live",
            name=INFERENCE_ALIAS,
            function_name=self.inference.function.name,
            function_version=self.inference.function.version if provisioned else "$LATEST",
            description="production: moved by the stack when production changes (skiff.serve.lambda_alias)",
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["function_version", "routing_config"]),
        )
        if provisioned:
            aws.lambda_.ProvisionedConcurrencyConfig(
                f"{name}-inference-provisioned",
                function_name=self.inference.function.name,
                qualifier=self.alias.name,
                provisioned_concurrent_executions=s.provisioned_concurrency,
                opts=child,
            )
        inference_target: pulumi.Output[str] = self.alias.arn

        # A canary's end is a one-time EventBridge Scheduler invocation of the completion function
        # (skiff.serve.canary); this role is what Scheduler acts as, for that function only.
        target = completion_arn(s.prefix, args.region, args.account_id)
        self.canary_role = aws.iam.Role(
            f"{name}-canary-scheduler-role",
            assume_role_policy=assume_role("scheduler.amazonaws.com", args.account_id),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-canary-scheduler-policy",
            role=self.canary_role.id,
            policy=document([statement(["lambda:InvokeFunction"], [target])]),
            opts=child,
        )
        self.registry_api = args.platform.function(
            name,
            "registry_api",
            {
                **common,
                **args.followers.environment,
                **(args.notifications.environment if args.notifications else {}),
                "SKIFF_CANARY_TARGET_ARN": target,
                "SKIFF_CANARY_ROLE_ARN": self.canary_role.arn,
            },
            [
                statement([*REGISTRY_READ_WRITE, "dynamodb:DeleteItem"], [table.arn]),
                statement(["kms:Decrypt", "kms:GenerateDataKey"], [key.arn]),
                statement(
                    ["scheduler:CreateSchedule"],
                    [f"arn:aws:scheduler:{args.region}:{args.account_id}:schedule/default/{s.prefix}-canary-*"],
                ),
                statement(
                    ["iam:PassRole"],
                    [self.canary_role.arn],
                    Condition={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
                ),
                *args.followers.statements,
                *(args.notifications.statements if args.notifications else []),
            ],
            child,
        )

        self.api = aws.apigatewayv2.Api(f"{name}-api", name=f"{s.prefix}-api", protocol_type="HTTP", opts=child)
        self.access_logs = aws.cloudwatch.LogGroup(
            f"{name}-api-access-logs",
            name=f"/aws/apigateway/{s.prefix}-api",
            retention_in_days=s.log_retention_days,
            opts=child,
        )
        self.stage = aws.apigatewayv2.Stage(
            f"{name}-stage",
            api_id=self.api.id,
            name="$default",
            auto_deploy=True,
            default_route_settings=aws.apigatewayv2.StageDefaultRouteSettingsArgs(
                throttling_rate_limit=s.throttle_rate_limit,
                throttling_burst_limit=s.throttle_burst_limit,
                detailed_metrics_enabled=True,
            ),
            access_log_settings=aws.apigatewayv2.StageAccessLogSettingsArgs(
                destination_arn=self.access_logs.arn,
                format='{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                '"routeKey":"$context.routeKey","status":"$context.status","latency":"$context.responseLatency",'
                '"caller":"$context.identity.userArn"}',
            ),
            opts=child,
        )
        self.routes: dict[str, aws.apigatewayv2.Route] = {}
        for function, target_arn, routes, auth in (
            (self.inference, inference_target, (PREDICT_ROUTE,), "AWS_IAM" if s.predict_auth == "iam" else "NONE"),
            (self.registry_api, self.registry_api.function.arn, ADMIN_ROUTES, "AWS_IAM"),
        ):
            integration = aws.apigatewayv2.Integration(
                f"{name}-{'inference' if function is self.inference else 'registry-api'}-integration",
                api_id=self.api.id,
                integration_type="AWS_PROXY",
                integration_uri=target_arn,
                payload_format_version="2.0",
                opts=child,
            )
            for route_key in routes:
                slug = route_key.lower().replace(" ", "-").replace("/", "-").replace("{", "").replace("}", "")
                self.routes[route_key] = aws.apigatewayv2.Route(
                    f"{name}-route{slug}",
                    api_id=self.api.id,
                    route_key=route_key,
                    target=pulumi.Output.concat("integrations/", integration.id),
                    authorization_type=auth,
                    opts=child,
                )
            aws.lambda_.Permission(
                f"{name}-{'inference' if function is self.inference else 'registry-api'}-invoke",
                action="lambda:InvokeFunction",
                function=function.function.name,
                qualifier=INFERENCE_ALIAS if function is self.inference else None,
                principal="apigateway.amazonaws.com",
                source_arn=pulumi.Output.concat(self.api.execution_arn, "/*/*"),
                opts=child,
            )
        self.url = self.api.api_endpoint
        self.register_outputs({"api_url": self.url})
