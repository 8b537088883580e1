"""End to end on the embedded local stack, with the real sms-spam data and the real handlers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from skiff.cli.client import ApiError, StackClient, StackOutputs
from skiff.data.dataset import read_csv, write_csv
from skiff.local.stack import LocalStack, LocalStackConfig
from skiff.serve.canary_alarms import canary_alarm_names

SMALL = {"epochs": 3, "buckets": 4096, "embedding_dim": 16, "char_ngrams": "none"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackClient]]:
    config = LocalStackConfig(
        work_dir=tmp_path_factory.mktemp("local-stack"), hyperparameters=SMALL, alias_ttl_seconds=0.5
    )
    with LocalStack(config) as stack:
        yield stack, StackClient(StackOutputs.from_dict(stack.outputs(), "local stack"))


@pytest.fixture(scope="module")
def sms_batches(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> list[Path]:
    rows = read_csv(sms_spam / "train.csv").examples
    directory = tmp_path_factory.mktemp("sms-batches")
    paths = []
    for i, (start, end) in enumerate(((0, 2000), (2000, 4460))):
        path = directory / f"sms-{i}.csv"
        write_csv(path, rows[start:end])
        paths.append(path)
    return paths


def wait_for_model(client: StackClient, dataset_version: str, timeout: float = 120) -> dict:
    return client.wait_for_job(dataset_version, timeout=timeout)


def test_upload_trains_a_version_that_then_serves(
    local: tuple[LocalStack, StackClient], sms_batches: list[Path]
) -> None:
    stack, client = local
    outcome = client.upload_outcome(client.upload(sms_batches[0]))
    assert outcome["status"] == "accepted"
    model = wait_for_model(client, outcome["dataset_version"])
    assert model["status"] == "production", model.get("status_reason")
    answer = client.predict(["WINNER!! You have won a free prize, call 09061701461 now"])
    assert answer["model_version"] == model["version"]
    assert answer["predictions"][0]["label"] == "spam"
    assert stack.errors == []


def test_duplicate_upload_starts_no_second_job(local: tuple[LocalStack, StackClient], sms_batches: list[Path]) -> None:
    stack, client = local
    jobs_before = {j["name"] for j in client.jobs()}
    outcome = client.upload_outcome(client.upload(sms_batches[0], name="same-content-again.csv"))
    assert outcome["status"] == "accepted" and outcome["dataset_version"] == "ds-000001"
    time.sleep(1.5)  # give the router time to (not) start anything
    assert {j["name"] for j in client.jobs()} == jobs_before


def test_bad_upload_is_quarantined_with_its_reason(local: tuple[LocalStack, StackClient], tmp_path: Path) -> None:
    _, client = local
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"message,category\nhello,ham\n")
    outcome = client.upload_outcome(client.upload(bad))
    assert outcome["status"] == "rejected"
    assert outcome["reason"] == "expected header text,label (got: 'message,category')"
    assert outcome["quarantined_as"] == "quarantine/bad.csv"


def test_rollback_under_load_fails_no_request_and_every_answer_names_its_version(
    local: tuple[LocalStack, StackClient], sms_batches: list[Path]
) -> None:
    stack, client = local
    outcome = client.upload_outcome(client.upload(sms_batches[1]))
    second = wait_for_model(client, outcome["dataset_version"])
    if second["status"] != "production":
        client.promote(second["version"], "test: make the second version serve")
    production = client.production()
    before, previous = production["production"]["version"], production["history"][0]["previous_version"]

    answers: list[tuple[int, str | None]] = []
    started_after_switch: list[str | None] = []  # answers to requests sent once rollback had returned
    switched = threading.Event()
    stop = threading.Event()

    def request_loop() -> None:
        while not stop.is_set():
            after = switched.is_set()
            try:
                answer = client.predict(["Are we still meeting for lunch tomorrow?"])
                answers.append((200, answer["model_version"]))
            except ApiError as exc:
                answers.append((exc.status, None))
            if after:
                started_after_switch.append(answers[-1][1])

    worker = threading.Thread(target=request_loop)
    worker.start()
    try:
        while len(answers) < 20:
            time.sleep(0.05)
        change = client.rollback("test: rollback under load")
        switched.set()
        assert (change["previous_version"], change["version"]) == (before, previous)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not answers or answers[-1][1] != previous):
            time.sleep(0.05)
        count = len(answers)
        while len(answers) < count + 20:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    assert {version for _, version in answers} == {before, previous}
    assert answers[-1][1] == previous
    # The alias moved before rollback answered: no request sent afterwards reached the old version.
    assert started_after_switch and set(started_after_switch) == {previous}
    function_version = stack.inference_alias.routing()[0]
    assert stack.inference_alias.bound_version(function_version) == previous


def test_the_gates_verdict_reaches_the_stacks_subscriber(local: tuple[LocalStack, StackClient]) -> None:
    stack, client = local
    production = client.models()[0]
    stack.deliver_notifications()
    promoted = [n for n in client.notifications() if n["event"] == "candidate-promoted"]
    assert production["version"] in {n["version"] for n in promoted}
    assert all(n["subject"].startswith("[skiff-local] ") and n["stack"] == "skiff-local" for n in promoted)


def test_jobs_show_the_local_executors_real_status(local: tuple[LocalStack, StackClient]) -> None:
    _, client = local
    jobs = client.jobs()
    assert jobs and all(j["status"] == "Completed" for j in jobs)
    assert all(j["epoch"] == j["epochs"] == 3 for j in jobs)
    assert json.loads(Path(client.outputs.progress_file or "").read_text())


def test_a_canary_serves_its_share_then_is_promoted_by_its_schedule(local: tuple[LocalStack, StackClient]) -> None:
    stack, client = local
    production = client.production()["production"]["version"]
    other = next(m["version"] for m in client.models() if m["status"] in ("retired", "candidate"))
    started = client.start_canary(other, 50, 0.1, "test: half the requests for 6 s")
    assert (started["version"], started["percent"]) == (other, 50)
    answered = {client.predict(["see you at lunch"])["model_version"] for _ in range(30)}
    assert answered == {production, other}  # both serve while it runs (each with p = 1/2^30 of missing)
    assert client.production()["canary"]["version"] == other
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and client.production()["production"]["version"] != other:
        time.sleep(0.2)
    after = client.production()
    assert after["production"]["version"] == other and after["canary"] is None
    assert after["history"][0]["actor"] == "canary"
    assert stack.inference_alias.routing()[1] == {}  # every request to the promoted version again
    assert {client.predict(["see you at lunch"])["model_version"] for _ in range(10)} == {other}


def test_a_canary_can_be_aborted_by_hand(local: tuple[LocalStack, StackClient]) -> None:
    _, client = local
    production = client.production()["production"]["version"]
    other = next(m["version"] for m in client.models() if m["status"] in ("retired", "candidate"))
    client.start_canary(other, 10, 30, "test: abort me")
    ended = client.abort_canary("test: enough")
    assert ended["version"] == other
    assert client.production()["canary"] is None and client.production()["production"]["version"] == production
    with pytest.raises(ApiError) as refused:
        client.abort_canary("test: nothing left")
    assert refused.value.status == 409


def test_a_canary_ending_with_a_serving_alarm_in_alarm_is_aborted_by_its_schedule(
    local: tuple[LocalStack, StackClient],
) -> None:
    stack, client = local
    production = client.production()["production"]["version"]
    other = next(m["version"] for m in client.models() if m["status"] in ("retired", "candidate"))
    client.start_canary(other, 10, 0.05, "test: 3 s with the alarm firing")
    cloudwatch = boto3.client("cloudwatch", endpoint_url=stack.endpoint_url, region_name="us-east-1")
    alarm = stack.config.names["serving_alarm"]
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test: errors")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.production()["canary"] is not None:
            time.sleep(0.2)
    finally:
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test over")
    after = client.production()
    assert after["canary"] is None and after["production"]["version"] == production
    assert stack.inference_alias.routing()[1] == {}  # the canary's share is gone
    stack.deliver_notifications()
    aborted = [n for n in client.notifications() if n["event"] == "canary-aborted"]
    assert aborted and aborted[-1]["version"] == other and alarm in aborted[-1]["reason"]


def test_a_running_canarys_own_alarms_watch_its_published_version_until_it_ends(
    local: tuple[LocalStack, StackClient],
) -> None:
    stack, client = local
    other = next(m["version"] for m in client.models() if m["status"] in ("retired", "candidate"))
    client.start_canary(other, 10, 30, "test: watched")
    cloudwatch = boto3.client("cloudwatch", endpoint_url=stack.endpoint_url, region_name="us-east-1")
    names = list(canary_alarm_names(stack.config.prefix))
    try:
        (canary_function,) = stack.inference_alias.routing()[1]
        latency = cloudwatch.describe_alarms(AlarmNames=names[1:])["MetricAlarms"][0]
        assert {"Name": "ExecutedVersion", "Value": canary_function} in latency["Dimensions"]
        assert len(cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]) == 2
    finally:
        client.abort_canary("test: done")
    assert cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"] == []


def test_a_promotion_answers_with_the_lambda_version_callers_now_reach(local: tuple[LocalStack, StackClient]) -> None:
    stack, client = local
    other = next(m["version"] for m in client.models() if m["status"] in ("retired", "candidate"))
    change = client.promote(other, "test: say where the alias went")
    assert change["function_version"] == stack.inference_alias.routing()[0]
    assert stack.inference_alias.bound_version(change["function_version"]) == other
