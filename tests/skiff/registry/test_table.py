from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from skiff.errors import ConflictError, NotFoundError, RegistryError
from skiff.registry.table import (
    CANDIDATE,
    FAILED,
    PRODUCTION,
    RETIRED,
    Registry,
    create_table,
    new_version_id,
)

TABLE = "skiff-registry-test"
METRICS = {"accuracy": 0.9883, "macro_f1": 0.9746, "f1_per_label": {"ham": 0.99, "spam": 0.956}}
LINEAGE = {
    "dataset_version": "ds-0001",
    "training_job": "skiff-ds-0001",
    "hyperparameters": {"epochs": 10},
    "code_version": "0.1.0",
}


@pytest.fixture
def registry(aws: None) -> Registry:
    create_table(TABLE)
    return Registry(TABLE)


def register(registry: Registry, **overrides: object) -> str:
    fields = {
        "artifact_uri": "s3://artifacts/models/x/",
        "manifest_sha256": "ab" * 32,
        "metrics": METRICS,
        "lineage": LINEAGE,
        **overrides,
    }
    return registry.register(**fields).version  # type: ignore[arg-type]


def test_version_ids_sort_by_creation_time() -> None:
    ids = [new_version_id() for _ in range(3)]
    assert ids[0][:19] <= ids[1][:19] <= ids[2][:19]
    assert len(set(ids)) == 3


def test_register_records_metrics_lineage_and_status(registry: Registry) -> None:
    version = register(registry)
    stored = registry.get(version)
    assert stored.status == CANDIDATE
    assert stored.metrics == METRICS and isinstance(stored.metrics["accuracy"], float)
    assert stored.lineage == LINEAGE
    assert stored.manifest_sha256 == "ab" * 32 and stored.created_at


def test_registering_the_same_version_twice_is_a_conflict(registry: Registry) -> None:
    version = register(registry)
    with pytest.raises(ConflictError, match="already registered"):
        register(registry, version=version)


def test_candidate_needs_an_artifact(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="artifact_uri and manifest_sha256"):
        register(registry, artifact_uri=None)


def test_unknown_version_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match=r"expected a registered model version \(got: 'v404'"):
        registry.get("v404")


def test_list_is_newest_first_and_paginated(registry: Registry) -> None:
    versions = [register(registry) for _ in range(5)]
    page, cursor = registry.list_versions(limit=2)
    assert [v.version for v in page] == versions[::-1][:2]
    rest, end = registry.list_versions(limit=10, cursor=cursor)
    assert [v.version for v in rest] == versions[::-1][2:]
    assert end is None


def test_bad_cursor_is_explained(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="expected a cursor returned by a previous page"):
        registry.list_versions(cursor="not a cursor")


def test_nothing_is_in_production_at_first(registry: Registry) -> None:
    assert registry.production() is None


def test_promote_moves_production_and_retires_the_previous(registry: Registry) -> None:
    first, second = register(registry), register(registry)
    registry.promote(first, "first model", actor="alice")
    change = registry.promote(second, "better accuracy", actor="bob")
    assert registry.production_version() == second
    assert (change.revision, change.previous_version, change.actor) == (2, first, "bob")
    assert registry.get(first).status == RETIRED
    assert registry.get(second).status == PRODUCTION


def test_promoting_production_again_is_a_conflict(registry: Registry) -> None:
    version = register(registry)
    registry.promote(version, "first")
    with pytest.raises(ConflictError, match="already production"):
        registry.promote(version, "again")


def test_promoting_a_rejected_version_fails_with_its_reason(registry: Registry) -> None:
    version = register(registry)
    registry.reject(version, "accuracy 0.91 below production 0.98")
    with pytest.raises(ConflictError, match=r"is rejected: accuracy 0\.91 below production 0\.98"):
        registry.promote(version, "try anyway")
    assert registry.production() is None


def test_promoting_a_failed_version_fails(registry: Registry) -> None:
    version = register(
        registry, status=FAILED, status_reason="AlgorithmError: out of memory", artifact_uri=None, manifest_sha256=None
    )
    with pytest.raises(ConflictError, match=r"expected a candidate or retired version to promote \(got: .* is failed"):
        registry.promote(version, "try anyway")


def test_promoting_an_unknown_version_fails(registry: Registry) -> None:
    with pytest.raises(NotFoundError):
        registry.promote("v404", "typo")


def test_promote_needs_a_reason(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="expected a non-empty reason"):
        registry.promote(register(registry), "  ")


def test_only_candidates_can_be_rejected(registry: Registry) -> None:
    version = register(registry)
    registry.promote(version, "first")
    with pytest.raises(ConflictError, match=r"to be a candidate to reject it \(got: production\)"):
        registry.reject(version, "late")
    assert registry.get(version).status == PRODUCTION


def test_rollback_returns_to_the_previous_versions_in_order(registry: Registry) -> None:
    v1, v2, v3 = (register(registry) for _ in range(3))
    for version in (v1, v2, v3):
        registry.promote(version, f"promote {version}")
    assert registry.rollback("v3 errors").version == v2
    assert registry.rollback("v2 also bad").version == v1
    assert registry.production_version() == v1
    assert [registry.get(v).status for v in (v1, v2, v3)] == [PRODUCTION, RETIRED, RETIRED]


def test_rollback_with_nothing_promoted_fails(registry: Registry) -> None:
    with pytest.raises(ConflictError, match=r"got: nothing promoted yet"):
        registry.rollback("oops")


def test_rollback_past_the_first_version_fails(registry: Registry) -> None:
    version = register(registry)
    registry.promote(version, "first")
    with pytest.raises(
        ConflictError, match=rf"expected an earlier production version to roll back to \(got: none before {version}\)"
    ):
        registry.rollback("oops")
    assert registry.production_version() == version


def test_history_and_audit_record_who_why_and_when(registry: Registry) -> None:
    v1, v2 = register(registry), register(registry)
    registry.promote(v1, "first", actor="alice")
    registry.promote(v2, "better", actor="bob")
    registry.rollback("latency alarm", actor="alarm")
    history = registry.history()
    assert [(h.revision, h.action, h.version, h.previous_version, h.actor) for h in history] == [
        (3, "rollback", v1, v2, "alarm"),
        (2, "promote", v2, v1, "bob"),
        (1, "promote", v1, None, "alice"),
    ]
    assert history[0].reason == "latency alarm" and history[0].at
    actions = [entry["action"] for entry in registry.audit()]
    assert actions.count("register") == 2 and actions.count("promote") == 2 and actions.count("rollback") == 1


def test_concurrent_promotes_and_rollbacks_leave_one_production_and_full_history(aws_server: str) -> None:
    create_table(TABLE)
    registry = Registry(TABLE)
    versions = [register(registry) for _ in range(6)]
    registry.promote(versions[0], "seed")
    successes = [1]
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(4):
            try:
                if rng.random() < 0.35:
                    registry.rollback(f"worker {seed}")
                else:
                    registry.promote(rng.choice(versions), f"worker {seed}")
            except ConflictError:
                continue  # already production / nothing to roll back to: a legitimate refusal
            with lock:
                successes[0] += 1

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(worker, range(20)))

    statuses = [registry.get(v).status for v in versions]
    assert statuses.count(PRODUCTION) == 1
    assert versions[statuses.index(PRODUCTION)] == registry.production_version()
    history = registry.history(limit=1000)
    assert [h.revision for h in history] == list(range(successes[0], 0, -1))
    for newer, older in zip(history, history[1:], strict=False):
        assert newer.previous_version == older.version  # an unbroken chain: no lost entry


# ---- canaries ---------------------------------------------------------------------------------


def serving(registry: Registry) -> tuple[str, str]:
    """(production, a candidate beside it)."""
    production = register(registry)
    registry.promote(production, "first")
    return production, register(registry)


def test_a_canary_is_recorded_beside_production(registry: Registry) -> None:
    production, candidate = serving(registry)
    started = registry.start_canary(candidate, 10, 5, "try it on a tenth")
    assert registry.canary() == started
    assert (started.version, started.percent, started.reason) == (candidate, 10, "try it on a tenth")
    assert registry.production_version() == production
    assert registry.audit(limit=1)[0]["action"] == "canary-start"


@pytest.mark.parametrize(("percent", "minutes"), [(0, 5), (51, 5), (10, 0), (10, 24 * 60 + 1)])
def test_a_canary_share_or_length_out_of_range_is_refused(registry: Registry, percent: float, minutes: float) -> None:
    _, candidate = serving(registry)
    with pytest.raises(RegistryError, match="expected a canary"):
        registry.start_canary(candidate, percent, minutes, "test")


def test_a_canary_needs_production_to_compare_with(registry: Registry) -> None:
    with pytest.raises(ConflictError, match="expected a production version"):
        registry.start_canary(register(registry), 10, 5, "test")


def test_production_itself_cannot_be_a_canary(registry: Registry) -> None:
    production, _ = serving(registry)
    with pytest.raises(ConflictError, match="already production"):
        registry.start_canary(production, 10, 5, "test")


def test_one_canary_at_a_time(registry: Registry) -> None:
    _, candidate = serving(registry)
    registry.start_canary(candidate, 10, 5, "test")
    with pytest.raises(ConflictError, match="no running canary"):
        registry.start_canary(register(registry), 10, 5, "test")


def test_completing_a_canary_promotes_it_and_ends_it(registry: Registry) -> None:
    production, candidate = serving(registry)
    registry.start_canary(candidate, 10, 5, "test")
    change = registry.promote(candidate, "canary healthy", actor="canary", canary=True)
    assert (change.version, change.previous_version) == (candidate, production)
    assert registry.canary() is None


def test_completing_refuses_a_version_that_is_not_the_running_canary(registry: Registry) -> None:
    _, candidate = serving(registry)
    with pytest.raises(ConflictError, match="running canary"):
        registry.promote(candidate, "canary healthy", canary=True)


def test_aborting_a_canary_leaves_production_as_it_was(registry: Registry) -> None:
    production, candidate = serving(registry)
    registry.start_canary(candidate, 10, 5, "test")
    ended = registry.abort_canary("errors", actor="alarm:x")
    assert ended is not None and ended.version == candidate
    assert registry.canary() is None and registry.production_version() == production
    assert registry.get(candidate).status == CANDIDATE
    assert registry.abort_canary("again") is None  # nothing left to end


def test_any_change_to_production_ends_a_running_canary(registry: Registry) -> None:
    _, candidate = serving(registry)
    registry.start_canary(candidate, 10, 5, "test")
    registry.promote(register(registry), "something else, by hand")
    assert registry.canary() is None
