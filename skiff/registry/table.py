"""The model registry on one DynamoDB table.

Items (partition key ``pk``, sort key ``sk``):

- ``VERSION`` / ``<version>``: one model version — status, metrics summary, artifact
  location and manifest sha256, lineage, timestamps. Version ids sort by creation time.
- ``ALIAS`` / ``production``: which version serves, a revision counter, the stack of
  earlier production versions that ``rollback`` returns to, and a running canary (a version
  that gets a share of requests until it is promoted or aborted; any change to production
  ends it).
- ``HISTORY#production`` / ``REV#<revision>``: one entry per promote or rollback.
- ``AUDIT`` / ``<time>#<id>``: every change, with who and why.

Promote and rollback are single DynamoDB transactions guarded by the alias revision
(optimistic concurrency): of two concurrent changes one commits and the other re-reads and
retries, so there is never a second production version and never a lost history entry.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from skiff import dynamo
from skiff.aws import LazyClient, client
from skiff.errors import ConflictError, NotFoundError, RegistryError
from skiff.notify import Notice

CANDIDATE, PRODUCTION, RETIRED, REJECTED, FAILED = "candidate", "production", "retired", "rejected", "failed"
STATUSES = (CANDIDATE, PRODUCTION, RETIRED, REJECTED, FAILED)
PROMOTABLE = (CANDIDATE, RETIRED)
ALIAS = "production"
MAX_ROLLBACK_DEPTH = 50
MAX_ATTEMPTS = 40


def new_version_id(now: datetime | None = None, tail: str | None = None) -> str:
    """``v20261122-184501123-a1b2``: sorts by creation time (ms), unique by its tail.

    The tail is random unless given: a training job's version passes a hash of the job name,
    so the same job always maps to the same version id (duplicate events register nothing new).
    """
    now = now or datetime.now(UTC)
    return f"v{now:%Y%m%d-%H%M%S}{now.microsecond // 1000:03d}-{tail or secrets.token_hex(2)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def metrics_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What the registry keeps of an artifact's metrics.json: enough to compare and explain."""
    evaluation, parity = metrics["eval"], metrics["parity"]
    return {
        "accuracy": evaluation["int8"]["accuracy"],
        "macro_f1": evaluation["int8"]["macro_f1"],
        "f1_per_label": {label: row["f1"] for label, row in evaluation["int8"]["per_class"].items()},
        "majority_baseline_accuracy": evaluation["majority_baseline_accuracy"],
        "eval_rows": evaluation["rows"],
        "eval_kind": evaluation["kind"],
        "parity_passed": parity["passed"],
        "parity_label_agreement": parity["label_agreement"],
        "int8_bytes": metrics["sizes"]["model.int8.onnx"],
        # Artifacts from before table pruning have no "served" size: the int8 model was all of it.
        "served_bytes": metrics["sizes"].get("served", metrics["sizes"]["model.int8.onnx"]),
        "batch1_p50_ms": (metrics.get("latency") or {}).get("batch1_p50_ms"),
        "compression": (metrics.get("compression") or {}).get("method"),
        # Artifacts from before calibration have none: their scores were never scaled.
        "ece": (metrics.get("calibration") or {}).get("ece"),
        "temperature": (metrics.get("calibration") or {}).get("temperature"),
    }


@dataclass(frozen=True)
class ModelVersion:
    version: str
    status: str
    created_at: str
    updated_at: str
    model_family: str = "bag"
    artifact_uri: str | None = None
    manifest_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    status_reason: str | None = None
    gpu_endpoint: dict[str, Any] | None = None  # {"state", "reason", "at"} when the stack has a GPU endpoint
    function_version: str | None = None  # the inference function's published version bound to it, once published

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Canary:
    """A version that gets ``percent`` of requests until ``until``, production the rest."""

    version: str
    percent: float
    until: str
    started_at: str
    reason: str
    actor: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_CANARY_PERCENT, MAX_CANARY_MINUTES = 50, 24 * 60

ENDPOINT_STATES = ("updating", "serving", "failed")
"""Where the GPU endpoint stands with a version it was asked to serve."""


@dataclass(frozen=True)
class AliasChange:
    revision: int
    action: str
    version: str
    previous_version: str | None
    reason: str
    actor: str
    at: str
    function_version: str | None = None  # where the inference function's alias went for it, once it did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def notice(self) -> Notice:
        """What subscribers hear about a change made by hand (through the registry API)."""
        what = (
            f"production rolled back to {self.version} by {self.actor}"
            if self.action == "rollback"
            else f"{self.version} promoted to production by {self.actor}"
        )
        return Notice("rolled-back" if self.action == "rollback" else "promoted", what, self.to_dict())


class Registry:
    """Register, list, promote and roll back model versions. Thread-safe."""

    dynamodb = LazyClient("dynamodb")

    def __init__(self, table_name: str, dynamodb: Any | None = None) -> None:
        self.table = table_name
        self.dynamodb = dynamodb

    # ---- reads -------------------------------------------------------------------------
    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return dynamo.get(self.dynamodb, self.table, pk, sk)

    def get(self, version: str) -> ModelVersion:
        item = self._get("VERSION", version)
        if item is None:
            raise NotFoundError(f"expected a registered model version (got: {version!r}, which does not exist)")
        return _version(item)

    def _alias(self) -> dict[str, Any] | None:
        return self._get("ALIAS", ALIAS)

    def production_version(self) -> str | None:
        """The version id that serves now, or None before the first promotion."""
        alias = self._alias()
        return alias["version"] if alias else None

    def production(self) -> ModelVersion | None:
        version = self.production_version()
        return self.get(version) if version else None

    def production_state(self) -> tuple[str | None, int, str | None]:
        """Production's version, the alias revision that made it so (0: none yet), and the
        version a rollback would return to (None: none)."""
        alias = self._alias()
        if not alias:
            return None, 0, None
        return alias["version"], int(alias["revision"]), (alias["stack"][-1] if alias["stack"] else None)

    def list_versions(self, limit: int = 20, cursor: str | None = None) -> tuple[list[ModelVersion], str | None]:
        """Newest first; pass the returned cursor back for the next page (None: no more).

        The cursor is the last version of the page: any version id is a valid cursor and means
        "versions older than this one", so no well-formed cursor is ever refused."""
        if not 1 <= limit <= 100:
            raise RegistryError(f"limit should be between 1 and 100 (got: {limit})")
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": dynamo.values(pk="VERSION"),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = _decode_cursor(cursor)
        response = self.dynamodb.query(**request)
        following = response.get("LastEvaluatedKey")
        versions = [_version(dynamo.from_item(i)) for i in response["Items"]]
        return versions, _encode_cursor(following) if following else None

    def history(self, limit: int = 100) -> list[AliasChange]:
        """Production alias changes, newest first."""
        response = self.dynamodb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=dynamo.values(pk=f"HISTORY#{ALIAS}"),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_change(dynamo.from_item(i)) for i in response["Items"]]

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        response = self.dynamodb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=dynamo.values(pk="AUDIT"),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [dynamo.from_item(i) for i in response["Items"]]

    # ---- writes ------------------------------------------------------------------------
    def _audit_put(self, action: str, version: str, actor: str, reason: str, **detail: Any) -> dict[str, Any]:
        at = _now()
        return {
            "Put": {
                "TableName": self.table,
                "Item": dynamo.to_item(
                    {
                        "pk": "AUDIT",
                        "sk": f"{at}#{secrets.token_hex(4)}",
                        "action": action,
                        "version": version,
                        "actor": actor,
                        "reason": reason,
                        "at": at,
                        "detail": detail or None,
                    }
                ),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def register(
        self,
        *,
        artifact_uri: str | None,
        manifest_sha256: str | None,
        metrics: Mapping[str, Any],
        lineage: Mapping[str, Any],
        model_family: str = "bag",
        status: str = CANDIDATE,
        status_reason: str | None = None,
        version: str | None = None,
        actor: str = "skiff",
    ) -> ModelVersion:
        """Record a new version as a candidate (or as failed, for a job that produced nothing)."""
        if status not in (CANDIDATE, FAILED):
            raise RegistryError(f"expected a new version to be {CANDIDATE!r} or {FAILED!r} (got: {status!r})")
        if status == CANDIDATE and not (artifact_uri and manifest_sha256):
            raise RegistryError("expected a candidate to have an artifact_uri and manifest_sha256 (got: none)")
        now = _now()
        model = ModelVersion(
            version=version or new_version_id(),
            status=status,
            created_at=now,
            updated_at=now,
            model_family=model_family,
            artifact_uri=artifact_uri,
            manifest_sha256=manifest_sha256,
            metrics=dict(metrics),
            lineage=dict(lineage),
            status_reason=status_reason,
        )
        try:
            self.dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": dynamo.to_item({"pk": "VERSION", "sk": model.version, **model.to_dict()}),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    self._audit_put("register", model.version, actor, status_reason or f"registered as {status}"),
                ]
            )
        except ClientError as exc:
            if dynamo.cancelled(exc):
                raise ConflictError(f"expected a new version id (got: {model.version!r}, already registered)") from exc
            raise
        return model

    def _status_change(self, version: str, seen: str, new: str, at: str, reason: str | None = None) -> dict[str, Any]:
        """A transaction item moving ``version`` from status ``seen`` to ``new`` (it fails if another
        writer moved it first), with ``reason`` as its status reason (None: no reason)."""
        expression = "SET #s = :new, updated_at = :at REMOVE status_reason"
        values: dict[str, Any] = {"new": new, "at": at, "seen": seen}
        if reason is not None:
            expression = "SET #s = :new, updated_at = :at, status_reason = :reason"
            values["reason"] = reason
        return {
            "Update": {
                "TableName": self.table,
                "Key": dynamo.to_item({"pk": "VERSION", "sk": version}),
                "UpdateExpression": expression,
                "ConditionExpression": "#s = :seen",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": dynamo.values(**values),
            }
        }

    def record_endpoint(self, version: str, state: str, reason: str | None = None, actor: str = "gpu-endpoint") -> None:
        """What the GPU endpoint did with ``version`` (updating, serving, failed and why), on the
        version (``skiff models``) and in the audit trail. Production itself does not move."""
        if state not in ENDPOINT_STATES:
            raise RegistryError(f"expected an endpoint state in {ENDPOINT_STATES} (got: {state!r})")
        at = _now()
        recorded = {"state": state, "reason": reason, "at": at}
        try:
            self.dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": dynamo.to_item({"pk": "VERSION", "sk": version}),
                            "UpdateExpression": "SET gpu_endpoint = :recorded",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": dynamo.values(recorded=recorded),
                        }
                    },
                    self._audit_put(f"endpoint-{state}", version, actor, reason or f"GPU endpoint {state}"),
                ]
            )
        except ClientError as exc:
            if dynamo.cancelled(exc):
                raise NotFoundError(
                    f"expected a registered model version (got: {version!r}, which does not exist)"
                ) from exc
            raise

    def record_function_version(self, version: str, function_version: str, revision: int | None = None) -> None:
        """The inference function's published version bound to ``version``; with ``revision``, the
        production change it served (its history entry then says where the alias went)."""
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": dynamo.to_item({"pk": "VERSION", "sk": version}),
                    "UpdateExpression": "SET function_version = :fv",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": dynamo.values(fv=function_version),
                }
            }
        ]
        if revision:
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": dynamo.to_item({"pk": f"HISTORY#{ALIAS}", "sk": f"REV#{revision:010d}"}),
                        "UpdateExpression": "SET function_version = :fv",
                        "ConditionExpression": "attribute_exists(pk) AND #v = :version",
                        "ExpressionAttributeNames": {"#v": "version"},
                        "ExpressionAttributeValues": dynamo.values(fv=function_version, version=version),
                    }
                }
            )
        try:
            self.dynamodb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if dynamo.cancelled(exc):
                raise ConflictError(
                    f"expected version {version} and production revision {revision} to exist (got: one missing)"
                ) from exc
            raise

    def reject(self, version: str, reason: str, actor: str = "quality-gate") -> ModelVersion:
        """A candidate that must never serve: record why."""
        try:
            self.dynamodb.transact_write_items(
                TransactItems=[
                    self._status_change(version, CANDIDATE, REJECTED, _now(), reason=reason),
                    self._audit_put("reject", version, actor, reason),
                ]
            )
        except ClientError as exc:
            if dynamo.cancelled(exc):
                current = self.get(version)  # raises NotFoundError for an unknown version
                raise ConflictError(
                    f"expected version {version} to be a {CANDIDATE} to reject it (got: {current.status})"
                ) from exc
            raise
        return self.get(version)

    def promote(self, version: str, reason: str, actor: str = "skiff", canary: bool = False) -> AliasChange:
        """Make ``version`` serve; the current production version becomes retired. With
        ``canary``, only while ``version`` is the running canary (its completion)."""
        _require_reason(reason)

        def plan(alias: dict[str, Any] | None) -> tuple[str, list[str]]:
            if canary and ((alias or {}).get("canary") or {}).get("version") != version:
                raise ConflictError(f"expected {version} to be the running canary (got: none, or another version)")
            target = self.get(version)
            if alias and alias["version"] == version:
                raise ConflictError(f"expected a version other than production (got: {version}, already production)")
            if target.status not in PROMOTABLE:
                why = f": {target.status_reason}" if target.status_reason else ""
                raise ConflictError(
                    f"expected a {' or '.join(PROMOTABLE)} version to promote (got: {version} is {target.status}{why})"
                )
            stack = list(alias["stack"]) if alias else []
            if alias:
                stack = (stack + [alias["version"]])[-MAX_ROLLBACK_DEPTH:]
            return target.status, stack

        return self._move_alias("promote", version, plan, reason, actor)

    # ---- canaries ----------------------------------------------------------------------------
    def canary(self) -> Canary | None:
        """The running canary, if any."""
        recorded = (self._alias() or {}).get("canary")
        return Canary(**recorded) if recorded else None

    def start_canary(self, version: str, percent: float, minutes: float, reason: str, actor: str = "skiff") -> Canary:
        """Give ``version`` ``percent`` of requests for ``minutes``, production serving the rest;
        then :meth:`promote` (``canary=True``) completes it or :meth:`abort_canary` ends it."""
        _require_reason(reason)
        if not 0 < percent <= MAX_CANARY_PERCENT:
            raise RegistryError(f"expected a canary share above 0 and at most {MAX_CANARY_PERCENT} % (got: {percent})")
        if not 0 < minutes <= MAX_CANARY_MINUTES:
            raise RegistryError(f"expected a canary of at most {MAX_CANARY_MINUTES} minutes (got: {minutes})")
        alias = self._alias()
        if not alias:
            raise ConflictError("expected a production version to compare a canary with (got: nothing promoted yet)")
        if alias.get("canary"):
            raise ConflictError(f"expected no running canary (got: {alias['canary']['version']} running)")
        if alias["version"] == version:
            raise ConflictError(f"expected a version other than production (got: {version}, already production)")
        target = self.get(version)
        if target.status not in PROMOTABLE:
            raise ConflictError(f"expected a {' or '.join(PROMOTABLE)} version (got: {version} is {target.status})")
        started = datetime.now(UTC)
        until = started + timedelta(minutes=minutes)
        canary = Canary(
            version,
            float(percent),
            until.isoformat(timespec="seconds"),
            started.isoformat(timespec="seconds"),
            reason,
            actor,
        )
        try:
            self.dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": dynamo.to_item({"pk": "ALIAS", "sk": ALIAS}),
                            "UpdateExpression": "SET canary = :canary",
                            "ConditionExpression": "revision = :revision AND attribute_not_exists(canary)",
                            "ExpressionAttributeValues": dynamo.values(
                                canary=asdict(canary), revision=alias["revision"]
                            ),
                        }
                    },
                    self._audit_put("canary-start", version, actor, reason, percent=percent, until=canary.until),
                ]
            )
        except ClientError as exc:
            if dynamo.cancelled(exc):
                raise ConflictError(
                    "expected production to stay as it was while the canary started (got: a change)"
                ) from exc
            raise
        return canary

    def abort_canary(self, reason: str, actor: str = "skiff", version: str | None = None) -> Canary | None:
        """End the running canary (``version``'s only, when given) without promoting it; production
        serves every request again. None when there was nothing to end."""
        _require_reason(reason)
        running = self.canary()
        if running is None or (version is not None and running.version != version):
            return None
        try:
            self.dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": dynamo.to_item({"pk": "ALIAS", "sk": ALIAS}),
                            "UpdateExpression": "REMOVE canary",
                            "ConditionExpression": "canary.#v = :version",
                            "ExpressionAttributeNames": {"#v": "version"},
                            "ExpressionAttributeValues": dynamo.values(version=running.version),
                        }
                    },
                    self._audit_put("canary-abort", running.version, actor, reason),
                ]
            )
        except ClientError as exc:
            if dynamo.cancelled(exc):
                return None  # ended meanwhile (promoted, aborted, or production changed)
            raise
        return running

    def rollback(self, reason: str, actor: str = "skiff") -> AliasChange:
        """Return production to the version that served before the current one."""
        _require_reason(reason)
        target: dict[str, str] = {}

        def plan(alias: dict[str, Any] | None) -> tuple[str, list[str]]:
            if not alias:
                raise ConflictError("expected a production version to roll back from (got: nothing promoted yet)")
            if not alias["stack"]:
                raise ConflictError(
                    f"expected an earlier production version to roll back to (got: none before {alias['version']})"
                )
            target["version"] = alias["stack"][-1]
            return self.get(target["version"]).status, list(alias["stack"][:-1])

        return self._move_alias("rollback", lambda: target["version"], plan, reason, actor)

    def _move_alias(
        self,
        action: str,
        version: str | Callable[[], str],
        plan: Callable[[dict[str, Any] | None], tuple[str, list[str]]],
        reason: str,
        actor: str,
    ) -> AliasChange:
        for attempt in range(MAX_ATTEMPTS):
            alias = self._alias()
            target_status, stack = plan(alias)
            target = version() if callable(version) else version
            previous = alias["version"] if alias else None
            revision = (alias["revision"] if alias else 0) + 1
            at = _now()
            change = AliasChange(revision, action, target, previous, reason, actor, at)
            items: list[dict[str, Any]] = [
                self._status_change(target, target_status, PRODUCTION, at),
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": dynamo.to_item(
                            {
                                "pk": "ALIAS",
                                "sk": ALIAS,
                                "version": target,
                                "revision": revision,
                                "stack": stack,
                                "reason": reason,
                                "actor": actor,
                                "updated_at": at,
                            }
                        ),
                        "ConditionExpression": "revision = :revision" if alias else "attribute_not_exists(pk)",
                        **({"ExpressionAttributeValues": dynamo.values(revision=revision - 1)} if alias else {}),
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": dynamo.to_item(
                            {"pk": f"HISTORY#{ALIAS}", "sk": f"REV#{revision:010d}", **change.to_dict()}
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                self._audit_put(action, target, actor, reason, previous_version=previous, revision=revision),
            ]
            if previous:
                items.append(self._status_change(previous, PRODUCTION, RETIRED, at))
            try:
                self.dynamodb.transact_write_items(TransactItems=items)
                return change
            except ClientError as exc:
                if not dynamo.cancelled(exc) and exc.response["Error"]["Code"] != "TransactionConflictException":
                    raise
                # Someone else moved the alias (or the target) first: re-read and re-plan.
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise ConflictError(f"expected to {action} within {MAX_ATTEMPTS} attempts (got: constant concurrent changes)")


REASON_PATTERN = r"[^\s\x00-\x20\x7f-\x9f\ufeff]"
"""A reason must hold one visible character: not only spaces or control characters. The same
pattern is the registry API's schema for it; the explicit ranges make Python's, JSON Schema's
(ECMA) and pydantic's (Rust) readings of it agree, since their ``\s`` differ at the edges."""


def _require_reason(reason: str) -> None:
    if not isinstance(reason, str) or not re.search(REASON_PATTERN, reason):
        raise RegistryError("expected a non-empty reason (got: empty); say why production changes")


def _version(item: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**{k: v for k, v in item.items() if k not in ("pk", "sk")})


def _change(item: dict[str, Any]) -> AliasChange:
    return AliasChange(**{k: item.get(k) for k in AliasChange.__dataclass_fields__})  # type: ignore[arg-type]


VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
"""What a version id (and so a page cursor) looks like."""


def _encode_cursor(key: Mapping[str, Any]) -> str:
    return str(dynamo.from_item(key)["sk"])


def _decode_cursor(cursor: str) -> dict[str, Any]:
    if not VERSION_ID.match(cursor):
        raise RegistryError(f"expected a cursor returned by a previous page, a version id (got: {cursor[:40]!r})")
    return dynamo.to_item({"pk": "VERSION", "sk": cursor})


def create_table(table_name: str, dynamodb: Any | None = None) -> None:
    """The table's shape (the Pulumi stack creates the same). For tests and the local stack."""
    (dynamodb or client("dynamodb")).create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
