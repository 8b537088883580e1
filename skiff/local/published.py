"""The inference function's published versions and alias, on the local stack.

moto keeps the function, its published versions and the alias exactly as Lambda's API does
(the same calls publish and move them: skiff.serve.lambda_alias), but it runs no code. So the
HTTP front invokes through :class:`AliasInvoker`, which routes each request as Lambda does:
it reads the alias, picks its version (or, with routing weights, the extra version with that
probability), and runs the handler from this checkout with that version's own environment,
the one its containers would have. A switch is therefore as atomic here as on AWS.
"""

from __future__ import annotations

import io
import json
import random
import threading
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

from skiff.aws import client
from skiff.serve.lambda_alias import LATEST, InferenceAlias

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def pick_version(version: str, weights: Mapping[str, float], draw: float) -> str:
    """The version an alias routes one request to: an extra version takes its weight's share of
    ``draw`` (uniform in [0, 1)), the main version the rest."""
    edge = 0.0
    for extra, weight in sorted(weights.items()):
        edge += float(weight)
        if draw < edge:
            return extra
    return version


def create_function(function_name: str, alias: str, environment: Mapping[str, str], code: bytes) -> None:
    """The inference function on moto (its role too: moto checks that Lambda may assume it), with
    the alias pointing at ``$LATEST`` until production has a published version, as deployed."""
    iam = client("iam")
    may_assume = {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    trust = {"Version": "2012-10-17", "Statement": [may_assume]}
    role = iam.create_role(RoleName=f"{function_name}-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    functions = client("lambda")
    functions.create_function(
        FunctionName=function_name,
        Role=role["Arn"],
        Runtime="python3.12",
        Handler="functions.inference.handler.lambda_handler",
        Code={"ZipFile": code},
        Environment={"Variables": dict(environment)},
    )
    functions.create_alias(FunctionName=function_name, Name=alias, FunctionVersion=LATEST)


def handler_zip(source: bytes) -> bytes:
    """A function zip holding the inference handler's source (moto stores it, never runs it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("functions/inference/handler.py", source)
    return buffer.getvalue()


class AliasInvoker:
    """Invoke ``handler`` as API Gateway invokes the function's alias."""

    def __init__(self, handler: Handler, alias: InferenceAlias, draw: Callable[[], float] = random.random) -> None:
        self.handler, self.alias, self.draw = handler, alias, draw
        self._environments: dict[str, dict[str, str]] = {}  # published versions never change
        self._lock = threading.Lock()
        self.invoked: dict[str, int] = {}  # requests per function version, for tests and the CLI

    def environment(self, function_version: str) -> dict[str, str]:
        if function_version == LATEST:  # never bound (lambda_alias.bound_model_version): nothing to read
            return {"AWS_LAMBDA_FUNCTION_VERSION": LATEST}
        with self._lock:
            known = self._environments.get(function_version)
        if known is not None:
            return known
        config = self.alias.functions.get_function_configuration(
            FunctionName=self.alias.settings.function_name, Qualifier=function_version
        )
        variables = {**((config.get("Environment") or {}).get("Variables") or {})}
        variables["AWS_LAMBDA_FUNCTION_VERSION"] = function_version
        with self._lock:
            self._environments[function_version] = variables
        return variables

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        version, weights, _ = self.alias.routing()
        chosen = pick_version(version, weights, self.draw())
        context.function_version = chosen
        context.function_environment = self.environment(chosen)
        with self._lock:
            self.invoked[chosen] = self.invoked.get(chosen, 0) + 1
        return self.handler(event, context)
