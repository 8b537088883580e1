"""The AWS CLI (pip ``awscli``) against the local stack, as a user uploads on AWS.

``aws s3 cp`` sends a file of 8 MiB or more as a multipart upload, whose object carries a
part-wise checksum; the stack must accept it, train on it, and train the next version that
still contains that part.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.cli.client import StackClient, StackOutputs
from skiff.data.dataset import read_csv, write_csv
from skiff.local.stack import LocalStack, LocalStackConfig

pytestmark = pytest.mark.slow

SMALL = {"epochs": 2, "buckets": 4096, "embedding_dim": 16, "char_ngrams": "none"}
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, StackClient]]:
    config = LocalStackConfig(work_dir=tmp_path_factory.mktemp("local-stack"), hyperparameters=SMALL)
    with LocalStack(config) as stack:
        yield stack, StackClient(StackOutputs.from_dict(stack.outputs(), "local stack"))


def aws(stack: LocalStack, home: Path, *args: str) -> str:
    """One AWS CLI command against the local stack, with the CLI's multipart threshold spelled out."""
    config = home / "config"
    config.write_text(f"[default]\ns3 =\n  multipart_threshold = {MULTIPART_THRESHOLD}\n")
    outputs = stack.outputs()
    environment = {
        **os.environ,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }
    command = [sys.executable, "-m", "awscli", *args, "--endpoint-url", outputs["aws_endpoint_url"]]
    run = subprocess.run(
        [*command, "--region", outputs["region"]], capture_output=True, text=True, env=environment, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def upload(stack: LocalStack, home: Path, path: Path) -> dict[str, str]:
    bucket = stack.outputs()["data_bucket"]
    output = aws(stack, home, "s3", "cp", "--no-progress", str(path), f"s3://{bucket}/incoming/{path.name}")
    assert output.startswith("upload:"), output
    return {"key": f"incoming/{path.name}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_a_multipart_upload_with_the_aws_cli_trains_and_so_does_the_next_version(
    local: tuple[LocalStack, StackClient], sms_spam: Path, tmp_path: Path
) -> None:
    stack, client = local
    rows = read_csv(sms_spam / "train.csv").examples[:900]
    # ≈ 9 MiB: each text padded with one long word, so the file is large but training stays short.
    padded = [type(row)(f"{row.text} {'z' * 2000}", row.label) for row in rows] * 5
    big, small = tmp_path / "big.csv", tmp_path / "next.csv"
    write_csv(big, padded)
    write_csv(small, read_csv(sms_spam / "train.csv").examples[900:1800])
    assert big.stat().st_size > MULTIPART_THRESHOLD
    # The same file elsewhere in the bucket (nothing moves it): the CLI stored it in parts.
    bucket = stack.outputs()["data_bucket"]
    aws(stack, tmp_path, "s3", "cp", "--no-progress", str(big), f"s3://{bucket}/elsewhere/big.csv")
    head = aws(stack, tmp_path, "s3api", "head-object", "--bucket", bucket, "--key", "elsewhere/big.csv")
    assert json.loads(head)["ETag"].strip('"').endswith("-2"), head

    first_outcome = client.upload_outcome(upload(stack, tmp_path, big))
    assert first_outcome["status"] == "accepted", first_outcome
    first = client.wait_for_job(first_outcome["dataset_version"], timeout=300)
    assert first["status"] == "production", first.get("status_reason")

    second_outcome = client.upload_outcome(upload(stack, tmp_path, small))
    assert second_outcome["status"] == "accepted" and second_outcome["dataset_version"] == "ds-000002"
    second = client.wait_for_job("ds-000002", timeout=300)  # this version holds the multipart part too
    assert second["status"] in ("production", "rejected"), second.get("status_reason")
    assert second["lineage"]["dataset_version"] == "ds-000002" and second["version"] != first["version"]
    assert stack.errors == []
