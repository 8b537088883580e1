"""Notifications: the stack's SNS topic, who may publish to it, and an optional e-mail subscriber.

The functions publish what the stack did on its own (skiff.notify: rollbacks, failed jobs,
gate verdicts); CloudWatch publishes alarms (dead-letter queues filling up, serving alarms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.policies import document, statement


@dataclass(frozen=True)
class NotificationsArgs:
    prefix: str
    account_id: str
    region: str
    key: aws.kms.Key  # the stack's key; its policy lets CloudWatch use it for this topic
    email: str | None = None


class Notifications(pulumi.ComponentResource):
    def __init__(self, name: str, args: NotificationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Notifications", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(
            f"{name}-topic", name=f"{args.prefix}-notifications", kms_master_key_id=args.key.arn, opts=child
        )
        aws.sns.TopicPolicy(
            f"{name}-topic-policy",
            arn=self.topic.arn,
            policy=document(
                [
                    statement(
                        ["sns:Publish"],
                        [self.topic.arn],
                        Sid="StackAlarms",
                        Principal={"Service": "cloudwatch.amazonaws.com"},
                        Condition={
                            "ArnLike": {"aws:SourceArn": alarm_arns(args.region, args.account_id, args.prefix)},
                            "StringEquals": {"aws:SourceAccount": args.account_id},
                        },
                    )
                ]
            ),
            opts=child,
        )
        if args.email:
            # SNS mails a confirmation link first; nothing is delivered until it is followed.
            aws.sns.TopicSubscription(
                f"{name}-email", topic=self.topic.arn, protocol="email", endpoint=args.email, opts=child
            )
        self.register_outputs({"topic_arn": self.topic.arn})

    @property
    def environment(self) -> dict[str, pulumi.Input[str]]:
        """What a function that notifies adds to its environment (skiff.notify.notifier_from_env)."""
        return {"SKIFF_NOTIFICATIONS_TOPIC_ARN": self.topic.arn}

    @property
    def statements(self) -> list[dict[str, Any]]:
        """What a function that notifies adds to its policy (the topic is encrypted with the
        stack's key, which these functions may already use)."""
        return [statement(["sns:Publish"], [self.topic.arn])]


def alarm_arns(region: str, account_id: str, prefix: str) -> str:
    """Every CloudWatch alarm of the stack (alarms are named ``<prefix>-…``)."""
    return f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{prefix}-*"
