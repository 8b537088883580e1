"""IAM policy documents as data, so every policy can be read (and tested) as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi


def statement(actions: Sequence[str], resources: Sequence[Any], **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), "Resource": list(resources), **extra}


def document(statements: Sequence[dict[str, Any]]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role(service: str, source_account: str | None = None) -> str:
    """A trust policy for ``service``; with ``source_account``, only on behalf of that account
    (the confused-deputy guard: another account cannot make the service act with this role)."""
    import json

    trust: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if source_account is not None:
        trust["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
    return json.dumps({"Version": "2012-10-17", "Statement": [trust]})


REGISTRY_READ_WRITE = (
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
)
"""What a function that registers versions or moves production does to the registry table."""


def service_may_send(
    queue_arn: Any, service: str, source_arn: Any, source_account: str | None = None
) -> dict[str, Any]:
    """An SQS queue-policy statement: ``service`` may send, on behalf of ``source_arn`` (and of
    ``source_account``) only."""
    condition: dict[str, Any] = {"ArnEquals": {"aws:SourceArn": source_arn}}
    if source_account is not None:
        condition["StringEquals"] = {"aws:SourceAccount": source_account}
    return statement(["sqs:SendMessage"], [queue_arn], Principal={"Service": service}, Condition=condition)


def sagemaker_container_statements(
    region: str, account_id: str, image_uri: str, log_group: str, metric_namespace: str
) -> list[dict[str, Any]]:
    """What a SageMaker job or endpoint container needs: its logs, its image, its metrics."""
    return [
        statement(
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            [f"arn:aws:logs:{region}:{account_id}:log-group:{log_group}:*"],
        ),
        statement(
            ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            [ecr_repository_arn(image_uri)],
        ),
        # AWS requires "*" here: GetAuthorizationToken has no resource-level permissions.
        statement(["ecr:GetAuthorizationToken"], ["*"]),
        # AWS requires "*" for PutMetricData; the condition pins it to SageMaker's namespace.
        statement(
            ["cloudwatch:PutMetricData"],
            ["*"],
            Condition={"StringEquals": {"cloudwatch:namespace": metric_namespace}},
        ),
    ]


def ecr_repository_arn(image_uri: str) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`` -> the repository's ARN."""
    host, _, path = image_uri.partition("/")
    account, _, rest = host.partition(".dkr.ecr.")
    region = rest.split(".")[0]
    return f"arn:aws:ecr:{region}:{account}:repository/{path.split(':')[0].split('@')[0]}"


def service_role(
    name: str,
    service: str,
    statements: Sequence[dict[str, Any]],
    opts: pulumi.ResourceOptions,
    source_account: str | None = None,
) -> Any:
    """An IAM role that only ``service`` may assume (for ``source_account`` only, when given),
    with one inline policy of ``statements``."""
    import pulumi_aws as aws

    role = aws.iam.Role(f"{name}-role", assume_role_policy=assume_role(service, source_account), opts=opts)
    aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=document(statements), opts=opts)
    return role


def objects(bucket: Any, *prefixes: str) -> list[pulumi.Output[str]]:
    """The ARNs of a bucket's objects under each prefix."""
    return [pulumi.Output.concat(bucket.arn, "/", prefix, "*") for prefix in prefixes]
