"""Every IAM policy the program writes, linted by parliament (duo-labs, from PyPI).

Identity policies (each role's) and resource policies (queues, buckets, topic, key); trust
policies are not linted (parliament reads every document as one that needs a Resource).

parliament checks actions, resource ARNs and condition keys against its copy of the IAM
reference and flags risky patterns. It imports ``pkg_resources``, which setuptools 81 removed,
so it runs in a virtualenv of its own with an older setuptools (building it needs an index;
the lint itself runs offline).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import Deployed, run_program

pytestmark = pytest.mark.slow

LINTER = ("parliament==1.6.4", "setuptools<81")
GPU_IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.6-gpu-py312"
POLICY_INPUTS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:sqs/queuePolicy:QueuePolicy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
    "aws:kms/key:Key": "policy",
}
LINT = """
import json, sys
from parliament import analyze_policy_string, enhance_finding
for name, document in json.load(open(sys.argv[1])).items():
    for finding in analyze_policy_string(document).findings:
        finding = enhance_finding(finding)
        print(json.dumps({"policy": name, "issue": finding.issue, "severity": finding.severity,
                          "detail": str(finding.detail), "location": str(finding.location)}))
"""


def policies(stack: Deployed) -> dict[str, str]:
    found = {}
    for resource in stack.resources:
        key = POLICY_INPUTS.get(resource.type)
        if key and resource.inputs.get(key):
            value = resource.inputs[key]
            found[f"{resource.type.split(':')[-1]} {resource.name}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
    return found


@pytest.fixture(scope="module")
def linter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("parliament") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *LINTER], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return venv / "bin" / "python"


def findings(linter: Path, stack: Deployed, tmp_path: Path) -> list[dict[str, Any]]:
    documents = policies(stack)
    assert len(documents) >= 14  # 7 role policies; queue, bucket, topic and key policies
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(documents))
    run = subprocess.run([str(linter), "-c", LINT, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.parametrize("gpu_endpoint", [False, True], ids=["default", "gpu-endpoint"])
def test_parliament_finds_no_high_or_critical_issue_in_any_policy(
    linter: Path, bundle_dir: Path, tmp_path: Path, gpu_endpoint: bool
) -> None:
    extra = {"gpu_endpoint": True, "gpu_inference_image_uri": GPU_IMAGE} if gpu_endpoint else {}
    stack = run_program(bundle_dir, **extra)
    found = findings(linter, stack, tmp_path)
    print("\n".join(json.dumps(f) for f in found))  # all findings, for the log
    assert [f for f in found if f["severity"] in ("HIGH", "CRITICAL")] == []
    # MEDIUM: a resource the action cannot be scoped to would silently never match (found one so).
    assert [f for f in found if f["issue"] == "RESOURCE_MISMATCH"] == []
