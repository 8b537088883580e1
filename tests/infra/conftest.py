"""Pulumi unit-test mocks (no CLI, no provider plugin). Set once, before the program is imported."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pulumi
import pytest

ACCOUNT, REGION = "123456789012", "eu-west-1"
IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.10.0-gpu-py313"


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{resource}"


@dataclass
class Resource:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]

    def json(self, key: str) -> Any:
        value = self.inputs[key]
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class Mocks(pulumi.runtime.Mocks):
    resources: list[Resource] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        physical = inputs.get("name") or f"{args.name}-x1y2z3"
        kind = args.typ.split(":")[1].split("/")[0]
        outputs = {**inputs}
        if args.typ == "aws:s3/bucket:Bucket":
            outputs.update(bucket=physical, arn=f"arn:aws:s3:::{physical}")
        elif args.typ == "aws:sqs/queue:Queue":
            outputs.update(name=physical, arn=_arn("sqs", physical), url=f"https://sqs/{physical}")
        elif args.typ == "aws:lambda/function:Function":
            outputs.update(
                arn=_arn("lambda", f"function:{physical}"),
                version="1",
                lastModified="2026-12-03T10:00:00.000+0000",
                invokeArn=f"arn:aws:apigateway:{REGION}:lambda:path/functions/{physical}/invocations",
            )
        elif args.typ == "aws:lambda/alias:Alias":
            outputs.update(arn=_arn("lambda", f"function:{inputs['functionName']}:{inputs['name']}"))
        elif args.typ == "aws:dynamodb/table:Table":
            outputs.update(arn=_arn("dynamodb", f"table/{physical}"))
        elif args.typ == "aws:kms/key:Key":
            outputs.update(arn=_arn("kms", "key/1234abcd"))
        elif args.typ == "aws:iam/role:Role":
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{physical}", name=physical)
        elif args.typ == "aws:cloudwatch/eventRule:EventRule":
            outputs.update(arn=_arn("events", f"rule/{physical}"), name=physical)
        elif args.typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            outputs.update(arn=_arn("cloudwatch", f"alarm:{physical}"))
        elif args.typ == "aws:cloudwatch/logGroup:LogGroup":
            outputs.update(arn=_arn("logs", f"log-group:{physical}"))
        elif args.typ == "aws:apigatewayv2/api:Api":
            outputs.update(
                apiEndpoint="https://abc123.execute-api.eu-west-1.amazonaws.com",
                executionArn=_arn("execute-api", "abc123"),
            )
        elif args.typ == "aws:s3/bucketObjectv2:BucketObjectv2":
            outputs.update(etag="0123456789abcdef")
        else:
            outputs.setdefault("arn", _arn(kind, physical))
        self.resources.append(Resource(args.typ, args.name, inputs, outputs))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/test",
                "userId": "AIDTEST",
                "id": ACCOUNT,
            }
        return {}


@dataclass
class Deployed:
    """What one run of the program registered, with the queries the tests use."""

    resources: list[Resource]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Resource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, predicate: Callable[[Resource], bool] = lambda r: True) -> Resource:
        (found,) = [r for r in self.of_type(typ) if predicate(r)]
        return found

    def named(self, typ: str, suffix: str) -> Resource:
        return self.one(typ, lambda r: r.name.endswith(suffix))


MOCKS = Mocks()
pulumi.runtime.set_mocks(MOCKS, project="skiff", stack="test", preview=False)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Lambda packages, built once per session (the layer build is cached by its inputs)."""
    return tmp_path_factory.mktemp("lambda-bundles")


def run_program(bundle_dir: Path, **overrides: Any) -> Deployed:
    """Run infra's program under the mocks with these settings; return what it registered."""
    from infra.settings import StackSettings
    from infra.stack import build_stack

    pulumi.runtime.set_all_config({"aws:region": REGION})
    MOCKS.resources.clear()
    settings = StackSettings(
        **{"prefix": "skiff-test", "training_image_uri": IMAGE, "bundle_dir": str(bundle_dir), **overrides}
    )

    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        return pulumi.Output.all(**build_stack(settings).outputs).apply(outputs.update)

    # The endpoint's real code/ carries ~300 MB of CUDA wheels; its packaging has its own tests
    # (tests/skiff/serve/test_endpoint_toolkit.py), so the program gets a stand-in of that layout.
    with patch("infra.stack.build_endpoint_code", lambda out_dir: endpoint_code_stand_in(out_dir)):
        program()
    return Deployed(list(MOCKS.resources), outputs)


ENDPOINT_CODE = ("inference.py", "requirements.txt", "wheels/skiff-0.1.0-py3-none-any.whl")


def endpoint_code_stand_in(out_dir: Path) -> Path:
    code = out_dir / "endpoint-code-stand-in"
    for name in ENDPOINT_CODE:
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(name)
    return code


@pytest.fixture(scope="module")
def stack(bundle_dir: Path) -> Deployed:
    """The stack with default settings."""
    return run_program(bundle_dir)
