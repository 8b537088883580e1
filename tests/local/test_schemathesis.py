"""Schemathesis fuzzes both APIs of the local stack from their committed OpenAPI documents.

Every generated request (schema-valid and schema-invalid) must get a documented status with a
body matching its documented schema: no server error, no undocumented status, no schema-valid
request refused, no schema-invalid request accepted. A model serves, so /predict answers 200.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from functions.openapi import DOCS
from skiff.cli.client import StackClient, StackOutputs
from skiff.data.dataset import read_csv, write_csv
from skiff.local.stack import LocalStack, LocalStackConfig

# schemathesis 4 gives every operation's item of one test function the same node id (pytest
# 9 drops the "[POST /predict]" of its name), and pytest-xdist schedules by node id: under -n
# all but one operation per API would never run. ./dev test runs this file in one process.
pytestmark = [pytest.mark.slow, pytest.mark.single_process]

SMALL = {"epochs": 2, "buckets": 4096, "embedding_dim": 16, "char_ngrams": "none"}
EXAMPLES = {"inference.json": 600, "registry.json": 250}  # at most: routes without inputs need only a few
CALLS: Counter[str] = Counter()
# The same generated requests on every run, so CI is repeatable; to explore further, run with
# SKIFF_FUZZ_RANDOM=1 (new examples each run; hypothesis keeps any failure in .hypothesis/).
SETTINGS: dict = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "derandomize": not os.environ.get("SKIFF_FUZZ_RANDOM"),
}

CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            # A schema-invalid body may also be refused as too large: 413 is documented where sent.
            "negative_data_rejection": {"expected-statuses": [400, 404, 409, 413, 415]},
            # API Gateway answers a method no route declares with 404 (HTTP APIs route by method
            # and path), not the 405 this check wants; the local front does as API Gateway does.
            "unsupported_method": {"enabled": False},
        }
    }
)
inference = schemathesis.openapi.from_path(DOCS / "inference.json", config=CONFIG)
registry = schemathesis.openapi.from_path(DOCS / "registry.json", config=CONFIG)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> Iterator[str]:
    config = LocalStackConfig(work_dir=tmp_path_factory.mktemp("local-stack"), hyperparameters=SMALL)
    with LocalStack(config) as stack:
        client = StackClient(StackOutputs.from_dict(stack.outputs(), "local stack"))
        data = tmp_path_factory.mktemp("data") / "sms.csv"
        write_csv(data, read_csv(sms_spam / "train.csv").examples[:1500])
        outcome = client.upload_outcome(client.upload(data))
        assert client.wait_for_job(outcome["dataset_version"])["status"] == "production"
        yield stack.api_url
        assert stack.errors == []


@inference.parametrize()
@settings(max_examples=EXAMPLES["inference.json"], **SETTINGS)
def test_schemathesis_inference_api(case: schemathesis.Case, api_url: str) -> None:
    CALLS[case.operation.label] += 1
    case.call_and_validate(base_url=api_url)


@registry.parametrize()
@settings(max_examples=EXAMPLES["registry.json"], **SETTINGS)
def test_schemathesis_registry_api(case: schemathesis.Case, api_url: str) -> None:
    CALLS[case.operation.label] += 1
    case.call_and_validate(base_url=api_url)


def test_schemathesis_sent_at_least_a_thousand_requests() -> None:
    """Runs after the two above (pytest keeps file order): the campaign was not vacuous."""
    assert sum(CALLS.values()) >= 1000, dict(CALLS)
    assert len(CALLS) == 8, dict(CALLS)  # every route of both APIs
