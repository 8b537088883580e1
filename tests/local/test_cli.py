"""The skiff CLI against a running local stack, and the stack's background lifecycle."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from skiff.cli.main import main
from skiff.local.stack import LocalStack, LocalStackConfig

SMALL = {"epochs": 3, "buckets": 4096, "embedding_dim": 16, "char_ngrams": "none"}


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("cli-stack")
    with LocalStack(LocalStackConfig(work_dir=work, hyperparameters=SMALL, alias_ttl_seconds=0.2)) as stack:
        path = work / "outputs.json"
        path.write_text(json.dumps(stack.outputs()))
        yield path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_commands_explain_what_to_do_without_a_stack(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIFF_HOME", str(tmp_path))
    code, _, err = run(capsys, "models")
    assert code == 2 and "skiff local up" in err and "--stack outputs.json" in err


def test_upload_models_predict_and_rollback_through_the_cli(
    stack_file: Path, sms_spam: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "upload", str(sms_spam / "test.csv"), "--stack", str(stack_file), "--json")
    assert code == 0 and json.loads(out)["status"] == "accepted"
    from skiff.cli.client import StackClient, StackOutputs

    client = StackClient(StackOutputs.load(str(stack_file)))
    first = client.wait_for_job("ds-000001")
    assert first["status"] == "production"

    code, out, _ = run(capsys, "predict", "Free entry! text WIN to 80086", "--stack", str(stack_file), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["model_version"] == first["version"] and answer["predictions"][0]["label"] == "spam"

    code, out, _ = run(capsys, "models", "--stack", str(stack_file), "--json")
    assert [m["version"] for m in json.loads(out)] == [first["version"]]

    code, out, _ = run(capsys, "jobs", "--stack", str(stack_file), "--json")
    (job,) = json.loads(out)
    assert (job["dataset_version"], job["status"], job["epoch"]) == ("ds-000001", "Completed", SMALL["epochs"])

    code, _, err = run(capsys, "rollback", "--stack", str(stack_file))
    assert code == 2 and "HTTP 409 conflict" in err and "none before" in err

    deadline = time.monotonic() + 10  # the stack's delivery thread polls its subscriber queue
    while True:
        code, out, _ = run(capsys, "notifications", "--stack", str(stack_file), "--json")
        if json.loads(out) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (notice,) = json.loads(out)
    assert code == 0 and (notice["event"], notice["version"]) == ("candidate-promoted", first["version"])


def test_a_deployed_stacks_notifications_are_its_subscribers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "api_url": "https://abc.execute-api.eu-west-1.amazonaws.com",
                "data_bucket": "d",
                "artifacts_bucket": "a",
                "registry_table": "t",
                "job_prefix": "skiff-prod",
                "notifications_topic_arn": "arn:aws:sns:eu-west-1:123456789012:skiff-prod-notifications",
            }
        )
    )
    code, _, err = run(capsys, "notifications", "--stack", str(outputs))
    assert code == 2 and "arn:aws:sns:eu-west-1:123456789012:skiff-prod-notifications" in err
    assert "skiff:notificationEmail" in err


def test_rejected_upload_exits_1_and_lists_the_lines(
    stack_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\nfine,ham\n,spam\n")
    code, out, _ = run(capsys, "upload", str(bad), "--stack", str(stack_file))
    assert code == 1
    assert "rejected" in out and "line 3: empty text" in out and "quarantine/bad.csv" in out


def test_rejections_lists_the_rejected_upload_with_its_lines(
    stack_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "lines.csv"
    bad.write_bytes(b"text,label\nfine,ham\n,spam\n")
    assert run(capsys, "upload", str(bad), "--stack", str(stack_file))[0] == 1
    code, out, _ = run(capsys, "rejections", "--stack", str(stack_file), "--json")
    (report,) = [r for r in json.loads(out) if r["key"] == "incoming/lines.csv"]
    assert code == 0 and [p["line"] for p in report["problems"]] == [3]
    code, out, _ = run(capsys, "rejections", "--stack", str(stack_file))
    assert code == 0 and "incoming/lines.csv" in out and "line 3: empty text" in out


def test_datasets_and_history_answer_after_the_first_model(
    stack_file: Path, sms_spam: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skiff.cli.client import StackClient, StackOutputs

    first = StackClient(StackOutputs.load(str(stack_file))).wait_for_job("ds-000001")  # after the upload test
    code, out, _ = run(capsys, "datasets", "--stack", str(stack_file), "--json")
    (dataset,) = json.loads(out)
    assert code == 0 and (dataset["dataset_version"], dataset["parts_count"]) == ("ds-000001", 1)
    assert dataset["rows"] == sum(dataset["label_counts"].values()) > 0
    code, out, _ = run(capsys, "history", "--stack", str(stack_file), "--json")
    (change,) = json.loads(out)
    assert code == 0 and (change["version"], change["previous_version"]) == (first["version"], None)
    assert change["function_version"]  # the published inference version the alias went to
    code, out, _ = run(capsys, "history", "--stack", str(stack_file))
    assert code == 0 and first["version"] in out


def test_logs_print_the_local_jobs_output_and_follow_ends_with_the_job(
    stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "logs", "ds-000001", "--stack", str(stack_file), "--follow", "--poll", "0.2")
    assert code == 0 and "epoch" in out
    code, out, _ = run(capsys, "logs", "skiff-local-ds-000001", "--stack", str(stack_file), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines and all(line["job"] == "skiff-local-ds-000001" for line in lines)


def test_logs_of_an_unknown_job_say_where_to_look(stack_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "logs", "ds-000099", "--stack", str(stack_file))
    assert code == 2 and "skiff-local-ds-000099" in err and "skiff jobs" in err


def test_promote_of_an_unknown_version_is_404(stack_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "promote", "v19990101-000000000-0000", "--stack", str(stack_file))
    assert code == 2 and "HTTP 404 not_found" in err


def test_local_up_and_down_leave_no_process_or_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.local import control
    from skiff.local.daemon import is_alive, read_state

    monkeypatch.setenv("SKIFF_HOME", str(tmp_path))
    outputs = control.up(timeout=90)
    pid = read_state()["pid"]  # type: ignore[index]
    ports = [urlsplit(outputs["api_url"]).port, urlsplit(outputs["aws_endpoint_url"]).port]
    assert all(_listening(port) for port in ports)
    assert control.up() == outputs  # idempotent: the same stack
    control.down()
    assert not is_alive(pid)
    assert not any(_listening(port) for port in ports)
    assert not (tmp_path / "local" / "state.json").exists()
    control.down()  # idempotent


def _listening(port: int | None) -> bool:
    """Whether any socket on this machine listens on ``port``, read from the kernel's tables.

    Not by connecting: a connect to a free port in the ephemeral range can succeed by connecting
    to itself (TCP simultaneous open), which once made this test see a port "still listening".
    """
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not any(table.is_file() for table in tables):  # not Linux: fall back to a connect
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", port or 0)) == 0
    for table in tables:
        for line in table.read_text().splitlines()[1:] if table.is_file() else []:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: TCP_LISTEN
                return True
    return False


def test_local_status_without_a_stack_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKIFF_HOME", str(tmp_path))
    code, _, err = run(capsys, "local", "status")
    assert code == 2 and "skiff local up" in err
    assert os.environ["SKIFF_HOME"] == str(tmp_path)


def test_ui_prints_its_url_and_serves_the_dashboard(stack_file: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    command = [sys.executable, "-m", "skiff.cli.main", "ui", "--stack", str(stack_file), "--port", "0", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(process.stdout.readline())["url"]
        assert urlsplit(url).hostname == "127.0.0.1"
        with urllib.request.urlopen(url + "data", timeout=30) as response:
            assert response.status == 200 and "Dataset versions" in response.read().decode()
    finally:
        process.terminate()
        process.wait(timeout=10)
