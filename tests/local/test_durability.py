"""Durability of the local stack: kill -9 the daemon mid-job, start it again, nothing is lost.

The daemon (``skiff local up``) runs in its own process group; after SIGKILL its training
child must die with it, and a new daemon must find every dataset version, model version, the
production alias and its history, and mark the interrupted job failed with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from skiff.aws import reset_clients
from skiff.cli.client import StackClient, StackOutputs
from skiff.data.dataset import read_csv, write_csv
from skiff.local import control
from skiff.local.daemon import is_alive, read_state

pytestmark = pytest.mark.slow

# Enough epochs that a job is still running when the daemon is killed or stopped (3,200 rows:
# about 0.1 s per epoch on one idle core, so ~40 s; jobs are killed, never waited for, except
# the two 600-row ones). 40 epochs was too few once the linear head became the default: a CI
# run saw the job finish before `down` reached it.
HYPERPARAMETERS = {"epochs": 400, "buckets": 4096, "char_ngrams": "none"}


def children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            parents[int(fields["Pid"])] = int(fields["PPid"])
        except (OSError, KeyError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_until_training(outputs: dict, dataset_version: str) -> None:
    job, progress = f"{outputs['job_prefix']}-{dataset_version}", Path(outputs["progress_file"])
    record: dict = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = json.loads(progress.read_text()).get(job, {}) if progress.is_file() else {}
        if record.get("status") == "InProgress" and (record.get("epoch") or 0) >= 1:
            return
        time.sleep(0.2)
    pytest.fail(f"expected {job} to be training (got: {record})")


def isolated_aws_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, "-")  # so that the client's settings are undone after the test
        monkeypatch.delenv(name)


def connect(outputs: dict) -> StackClient:
    reset_clients()  # the new daemon's moto listens on a new port
    return StackClient(StackOutputs.from_dict(outputs, "local stack"))


def registry_snapshot(client: StackClient) -> dict:
    production = client.production()
    return {
        "versions": {m["version"]: m["status"] for m in client.models(limit=50)},
        "production": production["production"]["version"],
        "history": [(h["version"], h["previous_version"], h["reason"]) for h in production["history"]],
    }


def test_durability_kill_9_mid_job_then_up_brings_everything_back(
    tmp_path: Path, sms_spam: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIFF_HOME", str(tmp_path / "home"))
    isolated_aws_settings(monkeypatch)
    rows = read_csv(sms_spam / "train.csv").examples
    first, second, third = tmp_path / "first.csv", tmp_path / "second.csv", tmp_path / "third.csv"
    write_csv(first, rows[:600])
    write_csv(second, rows[600:1200])
    write_csv(third, rows[1200:4400])

    outputs = control.up(hyperparameters=json.dumps(HYPERPARAMETERS), timeout=120)
    client = connect(outputs)
    try:
        for path, dataset_version in ((first, "ds-000001"), (second, "ds-000002")):
            assert client.upload_outcome(client.upload(path))["dataset_version"] == dataset_version
            client.wait_for_job(dataset_version, timeout=300)
        if len(client.production()["history"]) > 1:  # the gate promoted the second: a manual change too
            client.rollback("test: back to the first version")
        before = registry_snapshot(client)

        assert client.upload_outcome(client.upload(third))["dataset_version"] == "ds-000003"
        wait_until_training(outputs, "ds-000003")
        daemon = read_state()["pid"]  # type: ignore[index]
        family = children(daemon)
        assert family, "expected the daemon to have a training child"
        time.sleep(2.5)  # at least one periodic snapshot after the upload was accepted
        os.kill(daemon, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(is_alive(pid) for pid in family | {daemon}):
            time.sleep(0.1)
        assert not any(is_alive(pid) for pid in family | {daemon}), "orphaned processes survived the daemon"

        client = connect(control.up(hyperparameters=json.dumps(HYPERPARAMETERS), timeout=120))
        failed = client.wait_for_job("ds-000003", timeout=60)
        assert failed["status"] == "failed" and "interrupted" in (failed["status_reason"] or "")
        after = registry_snapshot(client)
        assert after["production"] == before["production"]
        assert after["history"] == before["history"]
        assert {v: s for v, s in after["versions"].items() if v in before["versions"]} == before["versions"]
        answer = client.predict(["WINNER!! claim your free prize now"])
        assert answer["model_version"] == before["production"]
    finally:
        control.down()


def test_durability_local_down_mid_job_stops_it_leaves_no_child_and_the_job_says_so(
    tmp_path: Path, sms_spam: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIFF_HOME", str(tmp_path / "home"))
    isolated_aws_settings(monkeypatch)
    data = tmp_path / "data.csv"
    write_csv(data, read_csv(sms_spam / "train.csv").examples[:3000])
    outputs = control.up(hyperparameters=json.dumps(HYPERPARAMETERS), timeout=120)
    try:
        client = connect(outputs)
        assert client.upload_outcome(client.upload(data))["dataset_version"] == "ds-000001"
        wait_until_training(outputs, "ds-000001")
        daemon = read_state()["pid"]  # type: ignore[index]
        family = children(daemon)
        control.down()
        assert not any(is_alive(pid) for pid in family | {daemon})

        client = connect(control.up(hyperparameters=json.dumps(HYPERPARAMETERS), timeout=120))
        stopped = client.wait_for_job("ds-000001", timeout=60)
        assert stopped["status"] == "failed" and "stopped while the job ran" in (stopped["status_reason"] or "")
    finally:
        control.down()
