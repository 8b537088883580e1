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
from skiff.serve.canary_alarms import canary_alarm_names


@dataclass(frozen=True)
class MonitoringArgs:
    settings: StackSettings
    api: aws.apigatewayv2.Api
    inference_function: aws.lambda_.Function
    queues: dict[str, aws.sqs.Queue]  # dead-letter queues to watch, by short name
    platform: FunctionPlatform
    artifacts_bucket: aws.s3.Bucket
    account_id: str
    region: str
    followers: ProductionFollowers = field(default_factory=ProductionFollowers)
    notifications: Notifications | None = None  # alarms and automatic rollbacks are told to it


UNLOADABLE_ALARM = "production-unloadable"
SERVING_ALARMS = ("inference-5xx-rate", "inference-p99-latency", UNLOADABLE_ALARM)
"""The alarms that judge serving: entering ALARM rolls production back (or aborts a canary),
and one in ALARM at a canary's end aborts it (skiff.serve.canary)."""


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
            # The canary's own alarms come and go with canaries (skiff.serve.canary_alarms): named, not made, here.
            event_pattern=pulumi.Output.all(*[a.arn for a in self.serving_alarms]).apply(
                lambda arns: json.dumps(
                    alarm_event_pattern([*arns, *canary_alarm_arns(s.prefix, args.region, args.account_id)])
                )
            ),
            opts=child,
        )
        self.rollback_dlq = event_dead_letter_queue(
            f"{name}-alarm-rollback-dlq", self.rollback_rule, args.account_id, child
        )
        self.rollback.invoked_by(f"{name}-serving-alarm", self.rollback_rule, child, dead_letters=self.rollback_dlq)
        self.other_alarms.append(dead_letters_alarm("alarm-rollback", self.rollback_dlq))

        queues = {**args.queues, "alarm-rollback": self.rollback_dlq}
        alarms = [*self.serving_alarms, *self.other_alarms]
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=s.prefix,
            dashboard_body=pulumi.Output.all(
                args.api.id,
                args.inference_function.name,
                pulumi.Output.all(*[q.name for q in queues.values()]),
                pulumi.Output.all(*[a.arn for a in alarms]),
            ).apply(
                lambda values: dashboard_body(
                    s.prefix,
                    args.region,
                    values[0],
                    values[1],
                    dict(zip(queues, values[2], strict=True)),
                    list(values[3]),
                )
            ),
            opts=child,
        )
        self.register_outputs({"rollback_rule_arn": self.rollback_rule.arn, "dashboard": self.dashboard.dashboard_name})


def canary_alarm_arns(prefix: str, region: str, account_id: str) -> list[str]:
    """The alarms on a running canary's own version (skiff.serve.canary_alarms): made and deleted
    by whoever moves the inference alias, with names fixed per stack."""
    return [f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{name}" for name in canary_alarm_names(prefix)]


def alarm_event_pattern(alarm_arns: list[str]) -> dict[str, object]:
    return {
        "source": ["aws.cloudwatch"],
        "detail-type": ["CloudWatch Alarm State Change"],
        "resources": alarm_arns,
        "detail": {"state": {"value": ["ALARM"]}},
    }


def dashboard_body(
    prefix: str,
    region: str,
    api_id: str,
    inference_function: str,
    dead_letter_queues: dict[str, str],
    alarm_arns: list[str],
) -> str:
    """The stack's CloudWatch dashboard: serving (requests, errors, latency per model version),
    training, production changes, dead letters and the alarms, in that order."""

    def graph(title: str, metrics: list[list[Any]], stat: str = "Sum", **extra: Any) -> dict[str, Any]:
        properties = {"title": title, "region": region, "view": "timeSeries", "stat": stat, "period": 60}
        return {"type": "metric", "width": 12, "height": 6, "properties": {**properties, "metrics": metrics, **extra}}

    def skiff(service: str, *names: str) -> list[list[Any]]:
        """Powertools EMF metrics of one function (namespace Skiff, dimension service)."""
        return [["Skiff", name, "service", service, {"label": name}] for name in names]

    def per_version(stat: str) -> list[Any]:
        query = '{Skiff,model_version,service} MetricName="PredictLatency" service="inference"'
        search = f"SEARCH('{query}', '{stat}', 60)"
        return [{"expression": search, "id": f"latency_{stat}", "region": region}]  # one line per version

    api = {"ApiId": api_id, "Stage": "$default"}
    widgets = [
        graph(
            "API requests and errors",
            [
                ["AWS/ApiGateway", name, *[x for kv in api.items() for x in kv], {"label": name}]
                for name in ("Count", "4xx", "5xx")
            ],
        ),
        graph("Prediction latency per model version (p50, p99)", [per_version("p50"), per_version("p99")]),
        graph(
            "Inference function",
            [
                [
                    "AWS/Lambda",
                    "Duration",
                    "FunctionName",
                    inference_function,
                    {"stat": "p50", "label": "duration p50"},
                ],
                [
                    "AWS/Lambda",
                    "Duration",
                    "FunctionName",
                    inference_function,
                    {"stat": "p99", "label": "duration p99"},
                ],
                ["AWS/Lambda", "Errors", "FunctionName", inference_function, {"yAxis": "right"}],
                ["AWS/Lambda", "Throttles", "FunctionName", inference_function, {"yAxis": "right"}],
                [
                    "AWS/Lambda",
                    "ConcurrentExecutions",
                    "FunctionName",
                    inference_function,
                    {"stat": "Maximum", "yAxis": "right"},
                ],
            ],
            stat="Average",
        ),
        graph(
            "Uploads and training jobs",
            [
                *skiff("upload-trigger", "Uploads_accepted", "Uploads_rejected", "TrainingJobsStarted"),
                *skiff("training-events", "TrainingOutcome_failed"),
            ],
        ),
        graph(
            "Gate verdicts and production changes",
            [
                *skiff("training-events", "TrainingOutcome_promoted", "TrainingOutcome_rejected"),
                *skiff("registry-api", "Promotions", "Rollbacks"),
                *skiff("alarm-rollback", "AutoRollback_rolled-back"),
            ],
        ),
        graph(
            "Dead-letter queues (messages waiting)",
            [
                ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue, {"label": short}]
                for short, queue in dead_letter_queues.items()
            ],
            stat="Maximum",
        ),
        {
            "type": "alarm",
            "width": 24,
            "height": 4,
            "properties": {"title": f"{prefix} alarms", "alarms": sorted(alarm_arns)},
        },
    ]
    return json.dumps({"widgets": widgets})
