"""Monitoring: alarms on serving and training, and automatic rollback on serving alarms."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.functions import FunctionPlatform, ProductionFollowers, event_dead_letter_queue
from infra.notifications import Notifications
from infra.policies import REGISTRY_READ_WRITE, objects, statement
from infra.settings import StackSettings


@dataclass(frozen=True)
class MonitoringArgs:
    settings: StackSettings
    api: aws.apigatewayv2.Api
    inference_function: aws.lambda_.Function
    queues: dict[str, aws.sqs.Queue]  # dead-letter queues to watch, by short name
    platform: FunctionPlatform
    artifacts_bucket: aws.s3.Bucket
    account_id: str
    followers: ProductionFollowers = field(default_factory=ProductionFollowers)
    notifications: Notifications | None = None  # alarms and automatic rollbacks are told to it


UNLOADABLE_ALARM = "production-unloadable"


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Monitoring", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)

        notify = [args.notifications.topic.arn] if args.notifications else []

        def alarm(short: str, **settings: Any) -> aws.cloudwatch.MetricAlarm:
            """An alarm named after the stack, told to the stack's topic; no data (an idle stack)
            is not a breach."""
            return aws.cloudwatch.MetricAlarm(
                f"{name}-{short}",
                name=f"{s.prefix}-{short}",
                treat_missing_data="notBreaching",
                alarm_actions=notify,
                opts=child,
                **settings,
            )

        def dead_letters_alarm(short: str, queue: aws.sqs.Queue) -> aws.cloudwatch.MetricAlarm:
            return alarm(
                f"{short}-dlq-depth",
                alarm_description=f"Messages waiting in the {short} dead-letter queue",
                namespace="AWS/SQS",
                metric_name="ApproximateNumberOfMessagesVisible",
                statistic="Maximum",
                dimensions={"QueueName": queue.name},
                period=300,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=1,
            )

        self.serving_alarms = [
            alarm(
                "inference-5xx-rate",
                alarm_description="Share of API requests answered 5xx",
                comparison_operator="GreaterThanThreshold",
                threshold=s.alarm_5xx_rate,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                metric_queries=[
                    *[
                        aws.cloudwatch.MetricAlarmMetricQueryArgs(
                            id=query_id,
                            return_data=False,
                            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                                namespace="AWS/ApiGateway",
                                metric_name=metric_name,
                                period=60,
                                stat="Sum",
                                dimensions={"ApiId": args.api.id, "Stage": "$default"},
                            ),
                        )
                        for query_id, metric_name in (("errors", "5xx"), ("requests", "Count"))
                    ],
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="rate",
                        expression="IF(requests > 0, errors / requests, 0)",
                        label="5xx rate",
                        return_data=True,
                    ),
                ],
            ),
            alarm(
                "inference-p99-latency",
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
            ),
            alarm(
                UNLOADABLE_ALARM,
                alarm_description=(
                    "The inference function answered 503 model_unavailable: production's artifact cannot be "
                    "loaded. The rollback function verifies that and returns to the previous version."
                ),
                namespace="Skiff",
                metric_name="Errors_model_unavailable",  # EMF, from skiff/serve/http.py's error mapping
                statistic="Sum",
                dimensions={"service": "inference"},
                period=60,
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=1,
                evaluation_periods=1,
            ),
        ]
        self.other_alarms = [
            alarm(
                "inference-throttles",
                namespace="AWS/Lambda",
                metric_name="Throttles",
                statistic="Sum",
                dimensions={"FunctionName": args.inference_function.name},
                period=60,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=1,
            ),
            alarm(
                "training-failures",
                alarm_description="A training job failed (EMF metric from the completion handler)",
                namespace="Skiff",
                metric_name="TrainingOutcome_failed",
                statistic="Sum",
                dimensions={"service": "training-events"},
                period=300,
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=1,
                evaluation_periods=1,
            ),
            *[dead_letters_alarm(short, queue) for short, queue in args.queues.items()],
        ]

        self.rollback = args.platform.function(
            name,
            "alarm_rollback",
            {
                "SKIFF_REGISTRY_TABLE": args.platform.table.name,
                "SKIFF_AUTO_ROLLBACK_WINDOW_SECONDS": str(s.auto_rollback_window_seconds),
                "SKIFF_UNLOADABLE_ALARM": f"{s.prefix}-{UNLOADABLE_ALARM}",
                "SKIFF_ARTIFACTS_BUCKET": args.artifacts_bucket.bucket,
                **args.followers.environment,
                **(args.notifications.environment if args.notifications else {}),
            },
            [
                statement(list(REGISTRY_READ_WRITE), [args.platform.table.arn]),
                # To check that production really cannot be loaded before rolling back for it.
                statement(["s3:GetObject"], objects(args.artifacts_bucket, "models/")),
                statement(["kms:Decrypt", "kms:GenerateDataKey"], [args.platform.key.arn]),
                *args.followers.statements,
                *(args.notifications.statements if args.notifications else []),
            ],
            child,
        )
        self.rollback_rule = aws.cloudwatch.EventRule(
            f"{name}-serving-alarm",
            description=f"{s.prefix}: serving alarms entering ALARM roll production back",
            event_pattern=pulumi.Output.all(*[a.arn for a in self.serving_alarms]).apply(
                lambda arns: json.dumps(alarm_event_pattern(list(arns)))
            ),
            opts=child,
        )
        self.rollback_dlq = event_dead_letter_queue(
            f"{name}-alarm-rollback-dlq", self.rollback_rule, args.account_id, child
        )
        self.rollback.invoked_by(f"{name}-serving-alarm", self.rollback_rule, child, dead_letters=self.rollback_dlq)
        self.other_alarms.append(dead_letters_alarm("alarm-rollback", self.rollback_dlq))
        self.register_outputs({"rollback_rule_arn": self.rollback_rule.arn})


def alarm_event_pattern(alarm_arns: list[str]) -> dict[str, object]:
    return {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "resources": alarm_arns,
        "detail": {"state": {"value": ["ALARM"]}},
    }
