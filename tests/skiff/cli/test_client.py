"""Which region a deployed stack's requests are signed for, checked with botocore's own signer."""

from __future__ import annotations

import pytest

from skiff.cli.client import StackClient, StackOutputs

API = "https://a1b2c3.execute-api.eu-west-2.amazonaws.com"


def _outputs(api_url: str = API, region: str | None = None) -> StackOutputs:
    return StackOutputs(api_url, "data", "artifacts", "table", "skiff-dev", region=region)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")


def test_the_region_comes_from_the_api_host_when_the_outputs_have_none() -> None:
    assert _outputs().signing_region() == ("eu-west-2", "the API's host name")


def test_an_explicit_region_wins() -> None:
    assert _outputs(region="us-west-2").signing_region("ap-south-1") == ("ap-south-1", "--region")


def test_the_outputs_region_wins_over_the_host() -> None:
    assert _outputs(region="us-west-2").signing_region() == ("us-west-2", "the stack outputs")


def test_a_custom_domain_falls_back_to_the_aws_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert _outputs("https://ml.example.com").signing_region() == ("sa-east-1", "the AWS configuration")


def test_the_last_resort_is_us_east_1_and_says_so() -> None:
    region, source = _outputs("https://ml.example.com").signing_region()
    assert region == "us-east-1" and "default" in source


def test_requests_are_signed_for_the_host_region() -> None:
    headers = StackClient(_outputs())._sign("GET", API + "/models", None, {})
    assert "/eu-west-2/execute-api/aws4_request" in headers["Authorization"]
