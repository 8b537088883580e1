"""moto started before any client exists, with fake credentials, one fresh account per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skiff.aws import reset_clients

REGION = "eu-west-1"


def _fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    _fake_credentials(monkeypatch)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    reset_clients()
    with mock_aws():
        yield
    reset_clients()


@pytest.fixture
def aws_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real moto server over HTTP: for tests where many threads call AWS at once."""
    from skiff.local.moto_server import MotoServer

    _fake_credentials(monkeypatch)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with MotoServer() as server:  # starts with empty backends
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
        reset_clients()
        yield server.endpoint_url
    reset_clients()
