"""Monitoring: alarms on serving and training, and automatic rollback on serving alarms."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.functions import FunctionArgs, ProductionFollowers, SkiffFunction
from infra.policies import statement
from infra.settings import StackSettings


@dataclass(frozen=True)
class MonitoringArgs:
    settings: StackSettings
    api: aws.apigatewayv2.Api
    inference_function: aws.lambda_.Function
    queues: dict[str, aws.sqs.Queue]  # dead-letter queues to watch, by short name
    table: aws.dynamodb.Table
    key: aws.kms.Key
    layer_arn: pulumi.Input[str]
    code_paths: dict[str, str]
    followers: ProductionFollowers = field(default_factory=ProductionFollowers)


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Monitoring", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        self.serving_alarms = [
            aws.cloudwatch.MetricAlarm(
                f"{name}-inference-5xx-rate",
                name=f"{s.prefix}-inference-5xx-rate",
                alarm_description="Share of API requests answered 5xx",
                comparison_operator="GreaterThanThreshold",
                threshold=s.alarm_5xx_rate,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                treat_missing_data="notBreaching",
                metric_queries=[
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="errors",
                        return_data=False,
                        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                            namespace="AWS/ApiGateway",
                            metric_name="5xx",
                            period=60,
                            stat="Sum",
                            dimensions={"ApiId": args.api.id, "Stage": "$default"},
                        ),
                    ),
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="requests",
                        return_data=False,
                        metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                            namespace="AWS/ApiGateway",
                            metric_name="Count",
                            period=60,
                            stat="Sum",
                            dimensions={"ApiId": args.api.id, "Stage": "$default"},
                        ),
                    ),
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="rate",
                        expression="IF(requests > 0, errors / requests, 0)",
                        label="5xx rate",
                        return_data=True,
                    ),
                ],
                opts=child,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-inference-p99-latency",
                name=f"{s.prefix}-inference-p99-latency",
                alarm_description="p99 duration of the inference function (ms)",
                namespace="AWS/Lambda",
                metric_name="Duration",
                extended_statistic="p99",
                dimensions={"FunctionName": args.inference_function.name},
                period=60,
                comparison_operator="GreaterThanThreshold",
                threshold=s.alarm_p99_latency_ms,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                treat_missing_data="notBreaching",
                opts=child,
            ),
        ]
        self.other_alarms = [
            aws.cloudwatch.MetricAlarm(
                f"{name}-inference-throttles",
                name=f"{s.prefix}-inference-throttles",
                namespace="AWS/Lambda",
                metric_name="Throttles",
                statistic="Sum",
                dimensions={"FunctionName": args.inference_function.name},
                period=60,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
                opts=child,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-training-failures",
                name=f"{s.prefix}-training-failures",
                alarm_description="A training job failed (EMF metric from the completion handler)",
                namespace="Skiff",
                metric_name="TrainingOutcome_failed",
                statistic="Sum",
                dimensions={"service": "training-events"},
                period=300,
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=1,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
                opts=child,
            ),
            *[
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{short}-dlq-depth",
                    name=f"{s.prefix}-{short}-dlq-depth",
                    alarm_description=f"Messages waiting in the {short} dead-letter queue",
                    namespace="AWS/SQS",
                    metric_name="ApproximateNumberOfMessagesVisible",
                    statistic="Maximum",
                    dimensions={"QueueName": queue.name},
                    period=300,
                    comparison_operator="GreaterThanThreshold",
                    threshold=0,
                    evaluation_periods=1,
                    treat_missing_data="notBreaching",
                    opts=child,
                )
                for short, queue in args.queues.items()
            ],
        ]

        self.rollback = SkiffFunction(
            f"{name}-alarm-rollback",
            FunctionArgs(
                prefix=s.prefix,
                short_name="alarm_rollback",
                code_path=args.code_paths["alarm_rollback"],
                layer_arn=args.layer_arn,
                architecture=s.lambda_architecture,
                environment={
                    "SKIFF_REGISTRY_TABLE": args.table.name,
                    "SKIFF_AUTO_ROLLBACK_WINDOW_SECONDS": str(s.auto_rollback_window_seconds),
                    **args.followers.environment,
                },
                statements=[
                    statement(
                        [
                            "dynamodb:GetItem",
                            "dynamodb:Query",
                            "dynamodb:PutItem",
                            "dynamodb:UpdateItem",
                            "dynamodb:ConditionCheckItem",
                        ],
                        [args.table.arn],
                    ),
                    statement(["kms:Decrypt", "kms:GenerateDataKey"], [args.key.arn]),
                    *args.followers.statements,
                ],
                log_retention_days=s.log_retention_days,
            ),
            opts=child,
        )
        self.rollback_rule = aws.cloudwatch.EventRule(
            f"{name}-serving-alarm",
            description=f"{s.prefix}: serving alarms entering ALARM roll production back",
            event_pattern=pulumi.Output.all(*[a.arn for a in self.serving_alarms]).apply(
                lambda arns: json.dumps(alarm_event_pattern(list(arns)))
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-serving-alarm-target", rule=self.rollback_rule.name, arn=self.rollback.function.arn, opts=child
        )
        aws.lambda_.Permission(
            f"{name}-alarm-rollback-invoke",
            action="lambda:InvokeFunction",
            function=self.rollback.function.name,
            principal="events.amazonaws.com",
            source_arn=self.rollback_rule.arn,
            opts=child,
        )
        self.register_outputs({"rollback_rule_arn": self.rollback_rule.arn})


def alarm_event_pattern(alarm_arns: list[str]) -> dict[str, object]:
    return {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "resources": alarm_arns,
        "detail": {"state": {"value": ["ALARM"]}},
    }
