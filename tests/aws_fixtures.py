"""moto started before any client exists, with fake credentials, one fresh account per test."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator

import pytest

from skiff.aws import reset_clients

REGION = "eu-west-1"


def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    _fake_credentials(monkeypatch)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    reset_clients()
    with mock_aws():
        yield
    reset_clients()


@pytest.fixture
def aws_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real moto server over HTTP: for tests where many threads call AWS at once."""
    from skiff.local.moto_server import MotoServer

    _fake_credentials(monkeypatch)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with MotoServer() as server:  # starts with empty backends
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
        reset_clients()
        yield server.endpoint_url
    reset_clients()


class Subscriber:
    """An SQS queue subscribed to an SNS topic in moto: what a subscriber of the stack receives."""

    def __init__(self) -> None:
        import boto3

        self.sns, self.sqs = boto3.client("sns"), boto3.client("sqs")
        self.topic_arn = self.sns.create_topic(Name="skiff-test-notifications")["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName="subscriber")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn["Attributes"]["QueueArn"])

    def received(self) -> list[dict]:
        """Each notification as SNS delivers it to SQS (the envelope, with ``Message`` decoded)."""
        import json

        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        envelopes = [json.loads(m["Body"]) for m in messages]
        return [{**e, "Message": json.loads(e["Message"])} for e in envelopes]


@pytest.fixture
def subscriber(aws: None, monkeypatch: pytest.MonkeyPatch) -> Subscriber:
    """The stack's notifications topic (in the handlers' environment) with one SQS subscriber."""
    found = Subscriber()
    monkeypatch.setenv("SKIFF_NOTIFICATIONS_TOPIC_ARN", found.topic_arn)
    monkeypatch.setenv("SKIFF_STACK", "skiff-test")
    return found


def function_code(handler_source: str = "") -> bytes:
    """A zip holding the inference handler's module (moto stores code; it never runs it here)."""
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("functions/inference/handler.py", handler_source)
    return code.getvalue()


def create_inference_function(name: str, table: str) -> None:
    """The inference function as the stack creates it, with its alias ``live`` on $LATEST."""
    import boto3

    trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = boto3.client("iam").create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument=json.dumps(trust))
    functions = boto3.client("lambda")
    functions.create_function(
        FunctionName=name,
        Role=role["Role"]["Arn"],
        Runtime="python3.12",
        Handler="functions.inference.handler.lambda_handler",
        Code={"ZipFile": function_code()},
        Environment={"Variables": {"SKIFF_REGISTRY_TABLE": table}},
    )
    functions.create_alias(FunctionName=name, Name="live", FunctionVersion="$LATEST")
