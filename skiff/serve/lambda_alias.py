"""Production on Lambda: a published version of the inference function per model version, and
the alias API Gateway invokes, which follows the registry.

A published Lambda version is an immutable copy of the function's code and configuration, so
its environment can say which model it serves (``SKIFF_MODEL_VERSION``): a container of that
version loads that model once (before its SnapStart snapshot, when the stack uses SnapStart) and
never asks the registry again. Moving the alias is then the switch: every request after it
reaches containers of the new version, with no TTL window. Pulumi owns ``$LATEST``'s
configuration; the binding lives in the published versions, which no ``pulumi up`` rewrites.

Lambda publishes nothing when code and configuration are unchanged since the last version (it
answers with that version; a new description does not count), so publishing sets the variable,
with a fresh token, on ``$LATEST`` first. ``$LATEST`` itself never counts as bound (the handler ignores the variable
there): it follows the registry, as the alias's first target before any model is published.

A published version also freezes the code and settings ``$LATEST`` had when it was published.
After a ``pulumi up`` that changed them (new handler code or layer, memory, timeout), the
version production is recorded with would keep serving the old ones; so a recorded version is
reused only while its code and deployed configuration still equal ``$LATEST``'s
(:func:`deployment`), and the stack invokes the completion function once after each such
deployment (:func:`deployment_event`, an ``aws.lambda_.Invocation`` in infra/stack.py) to
publish production again and move the alias.

The registry stays the record. Whoever changes production (the quality gate, the registry API,
the alarm rollback) then calls :meth:`InferenceAlias.follow`: it publishes production's version
if it has none, waits for it to become active (SnapStart takes minutes to snapshot), moves the
alias, and deletes the published versions nobody needs (each one SnapStart keeps costs a cache
charge). A follower that runs out of time announces :data:`PRODUCTION_CHANGED` so the
completion function, which may wait longer, finishes the move.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skiff import settings as env
from skiff.aws import LazyClient, client
from skiff.errors import ConflictError, NotFoundError, SkiffError
from skiff.registry.table import ModelVersion, Registry
from skiff.serve.canary_alarms import CanaryAlarms, canary_alarms_from_env

log = logging.getLogger(__name__)

MODEL_VERSION_VARIABLE = "SKIFF_MODEL_VERSION"
PUBLICATION_VARIABLE = "SKIFF_PUBLICATION"  # a fresh token per publication (see InferenceAlias.publish)
LATEST = "$LATEST"
DESCRIPTION_PREFIX = "skiff model "
EVENT_SOURCE = "skiff.registry"
PRODUCTION_CHANGED = "Skiff Production Changed"
DEPLOYMENT_REASON = "deployment"  # the reason deployment_event gives
# What a published version copies from $LATEST and a deployment may change (besides the
# environment, compared without the variables publishing itself sets).
_DEPLOYED_FIELDS = ("CodeSha256", "Runtime", "Handler", "MemorySize", "Timeout", "Architectures", "Role")
MAX_ATTEMPTS = 20
# Lambda's answers while another change to the function is in progress, or when a revision
# id no longer matches: someone else changed it first, so read again and retry.
_RETRY_CODES = ("ResourceConflictException", "PreconditionFailedException", "TooManyRequestsException")


def bound_model_version(environ: Mapping[str, str]) -> str | None:
    """The model version a container's environment binds it to: only a published version is
    bound; ``$LATEST`` (and anything outside Lambda) follows the registry."""
    if environ.get("AWS_LAMBDA_FUNCTION_VERSION", LATEST) == LATEST:
        return None
    return environ.get(MODEL_VERSION_VARIABLE) or None


@dataclass(frozen=True)
class AliasSettings:
    function_name: str
    alias: str = "live"
    wait_seconds: float = 20.0  # how long one follower waits for a published version to become active
    # Delete published versions that neither serve nor stand by (SnapStart bills each one kept).
    # The local stack keeps them: moto numbers a new version len(versions) + 1, so after a
    # deletion it would hand out a number still in use (Lambda never reuses one).
    delete_unused: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AliasSettings | None:
        """None unless the stack serves through published versions (SKIFF_INFERENCE_FUNCTION set)."""
        e = os.environ if environ is None else environ
        if not e.get("SKIFF_INFERENCE_FUNCTION"):
            return None
        return cls(
            function_name=e["SKIFF_INFERENCE_FUNCTION"],
            alias=e.get("SKIFF_INFERENCE_ALIAS") or "live",
            wait_seconds=env.number("SKIFF_ALIAS_WAIT_SECONDS", 20.0, e),
            delete_unused=not env.boolean("SKIFF_KEEP_PUBLISHED_VERSIONS", False, e),
        )


@dataclass(frozen=True)
class AliasOutcome:
    state: str  # "moved", "unchanged", "waiting" (not active yet), "failed", "none" (no production)
    model_version: str | None = None
    function_version: str | None = None
    reason: str | None = None
    deleted: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.state in ("moved", "unchanged", "none")


class InferenceAlias:
    functions = LazyClient("lambda")

    def __init__(
        self,
        settings: AliasSettings,
        functions: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        canary_alarms: CanaryAlarms | None = None,
    ) -> None:
        """``canary_alarms``: kept on the version a canary's share goes to (None: a canary is
        judged only by the serving alarms and at its end)."""
        self.settings = settings
        self.functions = functions
        self._clock, self._sleep = clock, sleep
        self.canary_alarms = canary_alarms

    # ---- published versions ------------------------------------------------------------------
    def _configuration(self, function_version: str) -> dict[str, Any] | None:
        """A version's configuration (None: it does not exist, or no longer)."""
        try:
            return self.functions.get_function_configuration(
                FunctionName=self.settings.function_name, Qualifier=function_version
            )
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise

    def bound_version(self, function_version: str) -> str | None:
        """The model version a published function version serves (None: unbound, or gone)."""
        config = self._configuration(function_version)
        if config is None or function_version == LATEST:
            return None
        return _variables(config).get(MODEL_VERSION_VARIABLE)

    def publish(self, model_version: str) -> str:
        """A new published version of the function bound to ``model_version``; its number.

        Each publication also sets a fresh ``SKIFF_PUBLICATION`` token, so the configuration
        always changes and Lambda always publishes (never answering with an earlier version,
        perhaps one deleted since), and the answer shows whose publication it is."""
        name = self.settings.function_name
        for attempt in range(MAX_ATTEMPTS):
            mine = {MODEL_VERSION_VARIABLE: model_version, PUBLICATION_VARIABLE: secrets.token_hex(8)}
            try:
                config = self._settled(name)
                self.functions.update_function_configuration(
                    FunctionName=name,
                    Environment={"Variables": {**_variables(config), **mine}},
                    **_revision(config),
                )
                config = self._settled(name)
                if not _carries(config, mine):
                    raise _Retry("another change to the function came between")
                published = self.functions.publish_version(
                    FunctionName=name, Description=f"{DESCRIPTION_PREFIX}{model_version}", **_revision(config)
                )
            except (ClientError, _Retry) as exc:
                if isinstance(exc, ClientError) and _code(exc) not in _RETRY_CODES:
                    raise
                self._sleep(random.uniform(0.2, 1.0) * (attempt + 1))
                continue
            if _carries(published, mine):
                log.info("published %s:%s for model %s", name, published["Version"], model_version)
                return str(published["Version"])
            # Another publisher's change came between ours and the publication: try again.
        raise ConflictError(f"expected to publish {name} for model {model_version} (got: constant concurrent changes)")

    def serves_as_deployed(self, function_version: str, model_version: str) -> bool:
        """Whether published ``function_version`` still exists, is bound to ``model_version``
        and carries the code and configuration ``$LATEST`` has now (none deployed since)."""
        config = self._configuration(function_version)
        if config is None or function_version == LATEST:
            return False
        if _variables(config).get(MODEL_VERSION_VARIABLE) != model_version:
            return False
        if deployment(config) != deployment(self._settled(self.settings.function_name)):
            log.info("published version %s predates the deployed function: publishing again", function_version)
            return False
        return True

    def published_for(self, model: ModelVersion, registry: Registry) -> str:
        """``model``'s published function version: the recorded one while it still exists, is
        bound to it and is as deployed, else a new one (recorded on the version)."""
        if model.function_version and self.serves_as_deployed(model.function_version, model.version):
            return model.function_version
        function_version = self.publish(model.version)
        registry.record_function_version(model.version, function_version)
        return function_version

    def _settled(self, name: str) -> dict[str, Any]:
        """``$LATEST``'s configuration once no update is in progress (Lambda refuses to publish
        during one; moto finishes updates at once and never shows it)."""
        deadline = self._clock() + 60
        while True:
            config = self.functions.get_function_configuration(FunctionName=name)
            if config.get("LastUpdateStatus", "Successful") != "InProgress" or self._clock() > deadline:
                return config
            self._sleep(1.0)

    def _active(self, function_version: str, wait_seconds: float) -> tuple[str, str | None]:
        """("Active", None), ("Failed", why) or ("Pending", None) once ``wait_seconds`` ran out."""
        deadline = self._clock() + wait_seconds
        while True:
            config = self.functions.get_function_configuration(
                FunctionName=self.settings.function_name, Qualifier=function_version
            )
            state = config.get("State", "Active")
            if state in ("Active", "Failed"):
                return state, config.get("StateReason")
            if self._clock() >= deadline:
                return "Pending", None
            self._sleep(min(2.0, max(0.0, deadline - self._clock())))

    # ---- the alias ---------------------------------------------------------------------------
    def routing(self) -> tuple[str, dict[str, float], str | None]:
        """Where the alias points: its version, extra weights, revision id."""
        alias = self.functions.get_alias(FunctionName=self.settings.function_name, Name=self.settings.alias)
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return str(alias["FunctionVersion"]), dict(weights), alias.get("RevisionId")

    def follow(self, registry: Registry, wait_seconds: float | None = None) -> AliasOutcome:
        """Point the alias at production's published version (publishing it first if needed),
        with a running canary's version taking its share of requests, then delete the published
        versions that neither serve nor stand by for a rollback."""
        wait = self.settings.wait_seconds if wait_seconds is None else wait_seconds
        for attempt in range(MAX_ATTEMPTS):
            current, weights, alias_revision = self.routing()
            version, revision, _ = registry.production_state()
            if version is None:
                return AliasOutcome("none", reason="nothing in production yet")
            canary = registry.canary()
            try:
                function_version = self.published_for(registry.get(version), registry)
                wanted: dict[str, float] = {}
                if canary is not None:
                    wanted = {self.published_for(registry.get(canary.version), registry): canary.percent / 100}
            except NotFoundError:
                continue  # production moved on while we read it
            if current == function_version and weights == wanted:
                self._watch_canary(wanted)
                return AliasOutcome("unchanged", version, function_version, deleted=self.prune(registry))
            for needed in (function_version, *wanted):
                state, why = self._active(needed, wait)
                if state == "Failed":
                    reason = f"published version {needed} failed to start: {why or 'no reason given'}"
                    log.error("alias %s stays on %s: %s", self.settings.alias, current, reason)
                    return AliasOutcome("failed", version, function_version, reason)
                if state != "Active":
                    return AliasOutcome("waiting", version, function_version, f"version {needed} still pending")
            if registry.production_state()[1] != revision or registry.canary() != canary:
                continue  # production changed while we waited: follow the newer change instead
            try:
                self.functions.update_alias(
                    FunctionName=self.settings.function_name,
                    Name=self.settings.alias,
                    FunctionVersion=function_version,
                    RoutingConfig={"AdditionalVersionWeights": wanted},
                    **({"RevisionId": alias_revision} if alias_revision else {}),
                )
            except ClientError as exc:
                if _code(exc) not in _RETRY_CODES:
                    raise
                self._sleep(random.uniform(0, 0.2) * (attempt + 1))
                continue  # another follower moved the alias first: look again
            # Production moved on meanwhile (ConflictError): the next follower records its own change.
            with contextlib.suppress(ConflictError):
                registry.record_function_version(version, function_version, revision)
            log.info(
                "alias %s: %s -> %s (model %s) %s", self.settings.alias, current, function_version, version, wanted
            )
            self._watch_canary(wanted)
            return AliasOutcome("moved", version, function_version, deleted=self.prune(registry))
        raise ConflictError(f"expected to move alias {self.settings.alias} (got: constant concurrent changes)")

    def _watch_canary(self, canary_weights: Mapping[str, float]) -> None:
        """The canary alarms follow the routing: on the version a canary's share goes to, or gone."""
        if self.canary_alarms is not None:
            canary_version = next(iter(canary_weights), None)
            self.canary_alarms.follow(self.settings.function_name, self.settings.alias, canary_version)

    def prune(self, registry: Registry) -> tuple[str, ...]:
        """Delete published versions of the function bound to a model that is neither production
        nor the rollback target, and that the alias does not route to."""
        if not self.settings.delete_unused:
            return ()
        current, weights, _ = self.routing()
        keep = {current, *weights}
        version, _, previous = registry.production_state()
        canary = registry.canary()
        for model in (version, previous, canary.version if canary else None):
            if model is None:
                continue
            try:
                recorded = registry.get(model).function_version
            except NotFoundError:
                continue
            if recorded:
                keep.add(recorded)
        deleted = []
        pages = self.functions.get_paginator("list_versions_by_function").paginate(
            FunctionName=self.settings.function_name
        )
        for page in pages:
            for config in page["Versions"]:
                number = str(config["Version"])
                if number == LATEST or number in keep:
                    continue
                if not str(config.get("Description") or "").startswith(DESCRIPTION_PREFIX):
                    continue  # not one of ours (published by hand, or by Pulumi)
                try:
                    self.functions.delete_function(FunctionName=self.settings.function_name, Qualifier=number)
                except ClientError as exc:
                    if _code(exc) not in (*_RETRY_CODES, "ResourceNotFoundException"):
                        raise
                    continue  # in use after all (an alias moved to it meanwhile), or gone
                deleted.append(number)
        return tuple(deleted)


class _Retry(Exception):
    pass


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code"))


def _variables(config: Mapping[str, Any]) -> dict[str, str]:
    return dict((config.get("Environment") or {}).get("Variables") or {})


def _carries(config: Mapping[str, Any], variables: Mapping[str, str]) -> bool:
    found = _variables(config)
    return all(found.get(name) == value for name, value in variables.items())


def deployment(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a function configuration says of its deployment: code, runtime settings, layers and
    environment, less the variables publishing sets (see the module's text)."""
    found = {name: config.get(name) for name in _DEPLOYED_FIELDS}
    found["Layers"] = sorted(str(layer.get("Arn")) for layer in config.get("Layers") or [])
    found["Environment"] = {
        name: value
        for name, value in _variables(config).items()
        if name not in (MODEL_VERSION_VARIABLE, PUBLICATION_VARIABLE)
    }
    return found


def _revision(config: Mapping[str, Any]) -> dict[str, str]:
    """Guard a write with the revision id just read (moto returns none for functions)."""
    return {"RevisionId": config["RevisionId"]} if config.get("RevisionId") else {}


def production_changed_entry(stack: str, version: str | None, reason: str) -> dict[str, Any]:
    """The EventBridge entry a follower that ran out of time sends (see the module's text)."""
    return {
        "Source": EVENT_SOURCE,
        "DetailType": PRODUCTION_CHANGED,
        "Detail": json.dumps({"stack": stack, "version": version, "reason": reason}),
    }


def deployment_event(stack: str) -> dict[str, Any]:
    """What the stack hands the completion function after a deployment changed the inference
    function: an EventBridge event of the same kind as a waiting follower's, so the same code
    publishes production again (the code and settings just deployed) and moves the alias."""
    return {
        "version": "0",
        "id": "skiff-deployment",
        "source": EVENT_SOURCE,
        "detail-type": PRODUCTION_CHANGED,
        "account": "",
        "time": "1970-01-01T00:00:00Z",
        "region": "",
        "resources": [],
        "detail": {"stack": stack, "version": None, "reason": DEPLOYMENT_REASON},
    }


def production_changed_pattern(stack: str) -> dict[str, Any]:
    return {"source": [EVENT_SOURCE], "detail-type": [PRODUCTION_CHANGED], "detail": {"stack": [stack]}}


def alias_from_env() -> InferenceAlias | None:
    settings = AliasSettings.from_env()
    return InferenceAlias(settings, canary_alarms=canary_alarms_from_env()) if settings is not None else None


def follow_alias(
    registry: Registry, alias: InferenceAlias | None, wait_seconds: float | None = None, announce: bool = True
) -> AliasOutcome | None:
    """After production changed: move the alias (no-op without one). Nothing here raises, since
    production has already moved; a move that has to wait longer than this caller may is
    announced (``announce``) for the completion function to finish."""
    if alias is None:
        return None
    try:
        outcome = alias.follow(registry, wait_seconds)
    except (ClientError, BotoCoreError, SkiffError) as exc:
        log.error("alias %s did not follow production: %s", alias.settings.alias, exc)
        outcome = AliasOutcome("failed", reason=str(exc))
    if announce and outcome.state == "waiting":
        entry = production_changed_entry(os.environ.get("SKIFF_STACK", ""), outcome.model_version, outcome.reason or "")
        client("events").put_events(Entries=[entry])
    return outcome
