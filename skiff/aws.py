"""boto3 clients, created on first use and shared, never at import time.

Creating clients lazily keeps cold starts short and lets tests start moto before any client
exists. The endpoint comes from boto3's own ``AWS_ENDPOINT_URL`` setting, which is how the
local stack points every client at its moto server.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

_lock = threading.Lock()


@cache
def _session() -> Any:
    """One session for every client: it caches the endpoint rules and models clients share."""
    import boto3

    return boto3.session.Session()


@cache
def _client(service: str, region: str | None) -> Any:
    from botocore.config import Config

    return _session().client(
        service, region_name=region, config=Config(retries={"mode": "standard", "max_attempts": 5})
    )


def client(service: str, region: str | None = None) -> Any:
    """A shared client for ``service`` (thread-safe creation; boto3 clients are thread-safe)."""
    with _lock:
        return _client(service, region)


def reset_clients() -> None:
    """Forget cached clients (tests that switch credentials or endpoints between cases)."""
    with _lock:
        _client.cache_clear()
        _session.cache_clear()


class LazyClient:
    """An attribute holding a boto3 client: the one passed in, else the shared one, made on first use.

    ``s3 = LazyClient("s3")`` in a class body; ``self.s3 = s3`` in ``__init__`` keeps an
    injected client (tests, a caller's session) and ``None`` means "the shared client".
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.slot = f"_{service}_client"

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_client"

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__.get(self.slot)
        if value is None:
            value = instance.__dict__[self.slot] = client(self.service)
        return value

    def __set__(self, instance: object, value: Any) -> None:
        instance.__dict__[self.slot] = value


_INSTANCE_STORAGE_FAMILIES = frozenset({"g5", "g6", "g6e", "gr6", "p5", "p5e", "p5en", "trn1", "trn1n", "trn2"})
"""ML instance families with NVMe instance storage whose names do not say so with a "d"."""


def has_instance_storage(instance_type: str) -> bool:
    """Whether SageMaker runs ``instance_type`` on NVMe instance storage instead of an EBS volume.

    Such storage is encrypted by the instance's hardware, and SageMaker refuses a volume KMS
    key for it (``VolumeKmsKeyId`` of a training job, ``KmsKeyId`` of an endpoint config): the
    request fails. Families with a "d" after the generation (m5d, c5d, r5d, g4dn, p3dn, p4d,
    p4de, c6id…) and the GPU/Trainium families listed above have it.
    """
    family = instance_type.removeprefix("ml.").split(".")[0]
    generation_and_options = family.lstrip("abcdefghijklmnopqrstuvwxyz")  # "g4dn" -> "4dn"
    options = generation_and_options.lstrip("0123456789")
    return family in _INSTANCE_STORAGE_FAMILIES or "d" in options
