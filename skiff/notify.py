"""Notifications: what the stack did on its own, told to whoever subscribed to its SNS topic.

Every message carries two forms (SNS ``MessageStructure="json"``): e-mail subscribers get a
few readable lines, every other protocol (SQS, Lambda, HTTPS) gets the notice as JSON. The
``event`` message attribute lets a subscription filter (``{"event": ["rolled-back"]}``).

Sending never fails the caller: a rollback that happened must not be undone or retried
because the message about it could not go out. Failures are logged.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skiff.aws import LazyClient

log = logging.getLogger(__name__)

EVENTS = (
    "rolled-back",
    "promoted",
    "training-failed",
    "candidate-rejected",
    "candidate-promoted",
    "endpoint-failed",
    "canary-started",
    "canary-promoted",
    "canary-aborted",
)
"""What is notified: production moved (by an alarm, by hand, by the gate), a job failed, the
gate said no, the GPU endpoint did not follow (dead-letter queues filling up reach the topic
through their alarms)."""

MAX_SUBJECT = 99
"""SNS refuses a subject of 100 characters or more, or with line breaks or non-ASCII."""


@dataclass(frozen=True)
class Notice:
    event: str  # one of EVENTS
    summary: str  # one line: what happened, to which version, why
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"expected a notice event in {EVENTS} (got: {self.event!r})")

    def subject(self, stack: str) -> str:
        """``[stack] summary`` as SNS accepts it: ASCII, one line, under 100 characters."""
        text = f"[{stack}] {self.summary}"
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        one_line = " ".join(ascii_text.split())
        return one_line if len(one_line) <= MAX_SUBJECT else one_line[: MAX_SUBJECT - 3] + "..."

    def as_json(self, stack: str) -> dict[str, Any]:
        return {"stack": stack, "event": self.event, "summary": self.summary, **self.details}

    def as_text(self, stack: str) -> str:
        lines = [self.summary, "", f"stack: {stack}", f"event: {self.event}"]
        lines += [f"{key}: {value}" for key, value in self.details.items() if value not in (None, "")]
        return "\n".join(lines) + "\n"


class Notifier:
    """Publishes notices to the stack's topic; without a topic, only logs them."""

    sns = LazyClient("sns")

    def __init__(self, topic_arn: str | None, stack: str, sns: Any = None) -> None:
        self.topic_arn, self.stack = topic_arn, stack
        self.sns = sns

    def send(self, notice: Notice) -> str | None:
        """The SNS message id, or None when there is no topic or publishing failed."""
        if not self.topic_arn:
            log.info("no notifications topic; not sent: %s", notice.summary)
            return None
        message = {"default": json.dumps(notice.as_json(self.stack)), "email": notice.as_text(self.stack)}
        try:
            response = self.sns.publish(
                TopicArn=self.topic_arn,
                Subject=notice.subject(self.stack),
                Message=json.dumps(message),
                MessageStructure="json",
                MessageAttributes={
                    "event": {"DataType": "String", "StringValue": notice.event},
                    "stack": {"DataType": "String", "StringValue": self.stack},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            log.error("notification not sent (%s): %s", notice.summary, exc)
            return None
        return str(response["MessageId"])


def notifier_from_env(environ: Mapping[str, str] | None = None) -> Notifier:
    e = os.environ if environ is None else environ
    return Notifier(e.get("SKIFF_NOTIFICATIONS_TOPIC_ARN") or None, e.get("SKIFF_STACK") or "skiff")
