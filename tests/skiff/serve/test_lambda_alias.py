"""The inference function's published versions and its alias, against moto's Lambda API."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from skiff.registry.table import Registry, create_table
from skiff.serve.lambda_alias import (
    DEPLOYMENT_REASON,
    LATEST,
    MODEL_VERSION_VARIABLE,
    PRODUCTION_CHANGED,
    PUBLICATION_VARIABLE,
    AliasOutcome,
    AliasSettings,
    InferenceAlias,
    bound_model_version,
    deployment_event,
    follow_alias,
    production_changed_pattern,
)
from tests.aws_fixtures import create_inference_function, function_code

TABLE, FUNCTION = "skiff-registry-test", "skiff-test-inference"


@pytest.fixture
def registry(aws: None) -> Registry:
    create_table(TABLE)
    return Registry(TABLE)


@pytest.fixture
def alias(aws: None) -> InferenceAlias:
    create_inference_function(FUNCTION, TABLE)
    return InferenceAlias(AliasSettings(FUNCTION, "live", wait_seconds=1), sleep=lambda _: None)


def candidate(registry: Registry) -> str:
    return registry.register(
        artifact_uri="s3://artifacts/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage={}
    ).version


def promoted(registry: Registry) -> str:
    version = candidate(registry)
    registry.promote(version, "test")
    return version


def environment_of(function_version: str) -> dict[str, str]:
    config = boto3.client("lambda").get_function_configuration(FunctionName=FUNCTION, Qualifier=function_version)
    return config["Environment"]["Variables"]


def published() -> set[str]:
    versions = boto3.client("lambda").list_versions_by_function(FunctionName=FUNCTION)["Versions"]
    return {v["Version"] for v in versions} - {LATEST}


def test_a_published_version_carries_its_model_version_and_keeps_the_rest_of_the_environment(
    alias: InferenceAlias,
) -> None:
    first, second = alias.publish("v1"), alias.publish("v2")
    assert first != second
    environment = environment_of(first)
    assert environment.pop(PUBLICATION_VARIABLE)  # this publication's own token
    assert environment == {"SKIFF_REGISTRY_TABLE": TABLE, MODEL_VERSION_VARIABLE: "v1"}
    assert environment_of(second)[MODEL_VERSION_VARIABLE] == "v2"
    assert alias.bound_version(first) == "v1"


def test_publishing_the_same_model_again_always_makes_a_new_version(alias: InferenceAlias) -> None:
    """Lambda answers an unchanged configuration with its last version, perhaps deleted since:
    every publication changes the configuration (its token), so it always publishes."""
    first = alias.publish("v1")
    again = alias.publish("v1")
    assert again != first and environment_of(again)[MODEL_VERSION_VARIABLE] == "v1"


def test_latest_counts_as_bound_to_nothing_whatever_its_environment_says(alias: InferenceAlias) -> None:
    alias.publish("v1")  # leaves the variable set on $LATEST
    assert environment_of(LATEST)[MODEL_VERSION_VARIABLE] == "v1"
    assert alias.bound_version(LATEST) is None
    assert bound_model_version({"AWS_LAMBDA_FUNCTION_VERSION": LATEST, MODEL_VERSION_VARIABLE: "v1"}) is None


def test_a_container_of_a_published_version_is_bound_to_its_model_version() -> None:
    assert bound_model_version({"AWS_LAMBDA_FUNCTION_VERSION": "7", MODEL_VERSION_VARIABLE: "v1"}) == "v1"
    assert bound_model_version({"AWS_LAMBDA_FUNCTION_VERSION": "7"}) is None  # published by hand: unbound
    assert bound_model_version({MODEL_VERSION_VARIABLE: "v1"}) is None  # not on Lambda


def test_with_nothing_in_production_the_alias_stays_on_latest(alias: InferenceAlias, registry: Registry) -> None:
    assert alias.follow(registry) == AliasOutcome("none", reason="nothing in production yet")
    assert alias.routing()[0] == LATEST


def test_following_a_promotion_moves_the_alias_to_a_version_bound_to_production(
    alias: InferenceAlias, registry: Registry
) -> None:
    version = promoted(registry)
    outcome = alias.follow(registry)
    assert (outcome.state, outcome.model_version) == ("moved", version)
    assert alias.routing()[0] == outcome.function_version
    assert environment_of(outcome.function_version)[MODEL_VERSION_VARIABLE] == version
    assert registry.get(version).function_version == outcome.function_version
    assert registry.history()[0].function_version == outcome.function_version  # the history says both


def test_following_again_changes_nothing(alias: InferenceAlias, registry: Registry) -> None:
    promoted(registry)
    moved = alias.follow(registry)
    again = alias.follow(registry)
    assert (again.state, again.function_version) == ("unchanged", moved.function_version)
    assert published() == {moved.function_version}


def test_a_rollback_returns_the_alias_to_the_previous_published_version_without_publishing(
    alias: InferenceAlias, registry: Registry
) -> None:
    promoted(registry)
    before = alias.follow(registry).function_version
    promoted(registry)
    alias.follow(registry)
    existing = published()
    registry.rollback("test")
    outcome = alias.follow(registry)
    assert (outcome.state, outcome.function_version) == ("moved", before)
    assert published() <= existing  # nothing new (the version rolled back from is deleted)


def test_only_production_and_the_rollback_target_keep_a_published_version(
    alias: InferenceAlias, registry: Registry
) -> None:
    oldest = promoted(registry)
    alias.follow(registry)
    previous = promoted(registry)
    alias.follow(registry)
    current = promoted(registry)
    outcome = alias.follow(registry)
    assert registry.get(oldest).function_version in outcome.deleted
    assert published() == {registry.get(previous).function_version, registry.get(current).function_version}


def test_versions_not_published_by_the_stack_are_never_deleted(alias: InferenceAlias, registry: Registry) -> None:
    by_hand = boto3.client("lambda").publish_version(FunctionName=FUNCTION, Description="by hand")["Version"]
    for _ in range(3):
        promoted(registry)
        alias.follow(registry)
    assert by_hand in published()


def test_a_recorded_version_that_no_longer_exists_is_published_again(alias: InferenceAlias, registry: Registry) -> None:
    version = promoted(registry)
    registry.record_function_version(version, "99")  # deleted since (moto reuses numbers: see FACTS.md)
    outcome = alias.follow(registry)
    assert outcome.state == "moved" and outcome.function_version != "99"
    assert environment_of(outcome.function_version)[MODEL_VERSION_VARIABLE] == version
    assert registry.get(version).function_version == outcome.function_version


def test_a_stack_may_keep_every_published_version(registry: Registry, alias: InferenceAlias) -> None:
    keeping = InferenceAlias(AliasSettings(FUNCTION, "live", delete_unused=False))
    for _ in range(3):
        promoted(registry)
        assert keeping.follow(registry).deleted == ()
    assert len(published()) == 3


def test_the_alias_waits_while_a_published_version_is_pending_then_gives_up(alias: InferenceAlias) -> None:
    client = boto3.client("lambda")
    clock = iter(range(100))
    waiting = InferenceAlias(alias.settings, functions=client, clock=lambda: next(clock), sleep=lambda _: None)
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("get_function_configuration", {"State": "Pending"})
        assert waiting._active("3", wait_seconds=1.5) == ("Pending", None)


def test_a_published_version_that_failed_to_start_says_why(alias: InferenceAlias) -> None:
    client = boto3.client("lambda")
    failing = InferenceAlias(alias.settings, functions=client, sleep=lambda _: None)
    with Stubber(client) as stub:
        stub.add_response("get_function_configuration", {"State": "Pending"})
        stub.add_response("get_function_configuration", {"State": "Failed", "StateReason": "init failed"})
        assert failing._active("3", wait_seconds=60) == ("Failed", "init failed")


def test_a_move_that_must_wait_is_announced_for_the_completion_function(
    alias: InferenceAlias, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs, events = boto3.client("sqs"), boto3.client("events")
    queue = sqs.create_queue(QueueName="heard")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="production-changed", EventPattern=json.dumps(production_changed_pattern("skiff-test")))
    events.put_targets(Rule="production-changed", Targets=[{"Id": "q", "Arn": queue_arn}])
    monkeypatch.setenv("SKIFF_STACK", "skiff-test")
    waiting = AliasOutcome("waiting", "v1", "3", "version 3 still pending")
    monkeypatch.setattr(InferenceAlias, "follow", lambda self, registry, wait_seconds=None: waiting)
    assert follow_alias(registry, alias) == waiting
    (message,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    event: dict[str, Any] = json.loads(message["Body"])
    assert (event["detail-type"], event["detail"]["version"]) == (PRODUCTION_CHANGED, "v1")


def test_a_follower_that_fails_leaves_production_as_it_is_and_says_why(
    alias: InferenceAlias, registry: Registry
) -> None:
    version = promoted(registry)
    boto3.client("lambda").delete_alias(FunctionName=FUNCTION, Name="live")
    outcome = follow_alias(registry, alias)
    assert outcome is not None and outcome.state == "failed" and "live" in (outcome.reason or "")
    assert registry.production_version() == version


def test_without_published_versions_there_is_nothing_to_follow(registry: Registry) -> None:
    assert follow_alias(registry, None) is None
    assert AliasSettings.from_env({}) is None


def test_a_canary_takes_its_share_through_the_alias_and_leaves_it_when_aborted(
    alias: InferenceAlias, registry: Registry
) -> None:
    promoted(registry)
    production = alias.follow(registry).function_version
    canary = candidate(registry)
    registry.start_canary(canary, 10, 5, "test")
    assert alias.follow(registry).state == "moved"
    main, weights, _ = alias.routing()
    (extra,) = weights
    assert (main, weights[extra]) == (production, 0.1)
    assert environment_of(extra)[MODEL_VERSION_VARIABLE] == canary
    registry.abort_canary("test")
    alias.follow(registry)
    assert alias.routing()[:2] == (production, {})


def deploy(**changes: Any) -> None:
    """What a `pulumi up` does to $LATEST: new handler code, or new settings with Pulumi's
    environment (which never holds the variables publishing sets)."""
    functions = boto3.client("lambda")
    if "code" in changes:
        functions.update_function_code(FunctionName=FUNCTION, ZipFile=function_code(changes.pop("code")))
    if changes:
        functions.update_function_configuration(
            FunctionName=FUNCTION, Environment={"Variables": {"SKIFF_REGISTRY_TABLE": TABLE}}, **changes
        )


def test_after_new_code_is_deployed_production_is_published_again_with_it(
    alias: InferenceAlias, registry: Registry
) -> None:
    version = promoted(registry)
    before = alias.follow(registry).function_version
    deploy(code="# the new handler\n")
    outcome = alias.follow(registry)
    assert outcome.state == "moved" and outcome.function_version != before
    functions = boto3.client("lambda")
    latest = functions.get_function_configuration(FunctionName=FUNCTION)["CodeSha256"]
    published_code = functions.get_function_configuration(FunctionName=FUNCTION, Qualifier=outcome.function_version)
    assert published_code["CodeSha256"] == latest
    assert environment_of(outcome.function_version)[MODEL_VERSION_VARIABLE] == version
    assert registry.get(version).function_version == outcome.function_version


def test_after_a_settings_change_is_deployed_production_is_published_again_with_it(
    alias: InferenceAlias, registry: Registry
) -> None:
    promoted(registry)
    before = alias.follow(registry).function_version
    deploy(MemorySize=512)
    outcome = alias.follow(registry)
    assert outcome.state == "moved" and outcome.function_version != before
    config = boto3.client("lambda").get_function_configuration(
        FunctionName=FUNCTION, Qualifier=outcome.function_version
    )
    assert config["MemorySize"] == 512


def test_a_deployment_that_changed_nothing_of_the_function_keeps_the_published_version(
    alias: InferenceAlias, registry: Registry
) -> None:
    promoted(registry)
    before = alias.follow(registry).function_version
    deploy(Timeout=3)  # moto's default: Pulumi rewrote the environment, nothing else changed
    assert alias.follow(registry) == AliasOutcome("unchanged", registry.production_state()[0], before)


def test_the_deployment_event_is_an_eventbridge_event_of_the_followers_kind() -> None:
    from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

    event = EventBridgeEvent(deployment_event("skiff-test"))
    assert (event.source, event.detail_type) == ("skiff.registry", PRODUCTION_CHANGED)
    assert event.detail == {"stack": "skiff-test", "version": None, "reason": DEPLOYMENT_REASON}
