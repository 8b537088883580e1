"""Serving logic behind the inference Lambda: which version serves, and switching safely.

One :class:`ModelServer` lives per container. A container of a published function version is
bound to one model version (skiff.serve.lambda_alias): it loads that one and never asks the
registry again, and the function's alias does the switching. Unbound (``$LATEST``, the local
stack before any publication, stacks without published versions), it asks the registry which
version is in production at most once per ``alias_ttl_seconds``; when that changes it fetches, verifies and
loads the new version *before* switching, and keeps answering with the old one meanwhile. A
version whose artifact fails verification is never switched to; the old one keeps serving
and the failure is logged (and retried only after ``retry_failed_after_seconds``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skiff import settings as env
from skiff.errors import (
    ArtifactError,
    ModelUnavailableError,
    NothingInProductionError,
    PayloadTooLargeError,
    RequestError,
    SkiffError,
)
from skiff.model.artifact import SERVING_FILES, load_artifact
from skiff.model.predictor import MAX_BATCH_TEXTS, Predictor
from skiff.registry.artifacts import ArtifactStore
from skiff.registry.table import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingSettings:
    registry_table: str
    artifacts_bucket: str
    alias_ttl_seconds: float = 5.0
    max_texts: int = MAX_BATCH_TEXTS
    max_text_chars: int = 5000
    model_cache_dir: Path = Path("/tmp/skiff-models")
    threads: int | None = None
    retry_failed_after_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        e = os.environ if environ is None else environ
        threads = env.integer("SKIFF_ORT_THREADS", 0, e)
        return cls(
            registry_table=env.require("SKIFF_REGISTRY_TABLE", e),
            artifacts_bucket=env.require("SKIFF_ARTIFACTS_BUCKET", e),
            alias_ttl_seconds=env.number("SKIFF_ALIAS_TTL_SECONDS", 5.0, e),
            max_texts=env.integer("SKIFF_MAX_TEXTS", MAX_BATCH_TEXTS, e, minimum=1),
            max_text_chars=env.integer("SKIFF_MAX_TEXT_CHARS", 5000, e, minimum=1),
            model_cache_dir=Path(e.get("SKIFF_MODEL_CACHE_DIR") or "/tmp/skiff-models"),
            threads=threads or None,
            retry_failed_after_seconds=env.number("SKIFF_RETRY_FAILED_AFTER_SECONDS", 60.0, e),
        )


@dataclass(frozen=True)
class LoadedModel:
    version: str
    predictor: Predictor


def check_texts(texts: Sequence[str], settings: ServingSettings) -> None:
    """Limits on one request; exceeding them is the client's to fix (413), never a 500."""
    if not texts:
        raise RequestError("expected at least one text (got: an empty list)")
    if len(texts) > settings.max_texts:
        raise PayloadTooLargeError(f"expected at most {settings.max_texts} texts per request (got: {len(texts)})")
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise PayloadTooLargeError(
                f"expected texts of at most {settings.max_text_chars} characters (got: {len(text)} in text {i})"
            )


class ModelServer:
    def __init__(
        self,
        settings: ServingSettings,
        registry: Registry | None = None,
        store: ArtifactStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        bound_version: str | None = None,
    ) -> None:
        self.settings = settings
        self.bound_version = bound_version
        self.registry = registry or Registry(settings.registry_table)
        self.store = store or ArtifactStore(settings.artifacts_bucket)
        self._clock = clock
        self._loaded: LoadedModel | None = None
        self._wanted: str | None = None
        self._checked_at = float("-inf")
        self._failed: dict[str, tuple[float, str]] = {}
        self._state_lock = threading.Lock()
        self._load_lock = threading.Lock()

    def _production_version(self) -> str | None:
        if self.bound_version is not None:
            return self.bound_version
        now = self._clock()
        with self._state_lock:
            if now - self._checked_at < self.settings.alias_ttl_seconds:
                return self._wanted
        wanted = self.registry.production_version()
        with self._state_lock:
            self._wanted, self._checked_at = wanted, now
        return wanted

    def current(self) -> LoadedModel:
        """The model to answer this request with (loading a new production version first)."""
        wanted = self._production_version()
        loaded = self._loaded
        if wanted is None:
            if loaded is not None:
                return loaded
            raise NothingInProductionError("expected a production model version (got: none promoted yet)")
        if loaded is not None and loaded.version == wanted:
            return loaded
        failed = self._failed.get(wanted)
        if failed and self._clock() - failed[0] < self.settings.retry_failed_after_seconds:
            return self._fallback(wanted, failed[1])
        # One loader at a time; while it works, other threads keep answering with the old model.
        if not self._load_lock.acquire(blocking=loaded is None):
            return loaded  # type: ignore[return-value]
        try:
            if self._loaded is not None and self._loaded.version == wanted:
                return self._loaded
            try:
                self._loaded = LoadedModel(wanted, self._load(wanted))
                self._failed.pop(wanted, None)
                log.info("serving model version %s", wanted, extra={"model_version": wanted})
            except (SkiffError, ClientError, BotoCoreError) as exc:
                self._failed[wanted] = (self._clock(), str(exc))
                log.error(
                    "refusing to switch to model version %s: %s",
                    wanted,
                    exc,
                    extra={"model_version": loaded.version if loaded else None, "refused_version": wanted},
                )
                return self._fallback(wanted, str(exc))
            return self._loaded
        finally:
            self._load_lock.release()

    def _fallback(self, wanted: str, reason: str) -> LoadedModel:
        if self._loaded is not None:
            return self._loaded
        raise ModelUnavailableError(f"expected production version {wanted} to load (got: {reason})")

    def _load(self, version: str) -> Predictor:
        record = self.registry.get(version)
        if not record.artifact_uri or not record.manifest_sha256:
            raise ArtifactError(f"expected version {version} to have an artifact (got: none registered)")
        directory = self.settings.model_cache_dir / version
        try:
            artifact = load_artifact(directory, only=SERVING_FILES)  # a warm container may have it already
            if artifact.manifest_sha256 != record.manifest_sha256:
                raise ArtifactError("cached manifest differs from the registered one")
        except ArtifactError:
            artifact = self.store.fetch(
                record.artifact_uri, directory, only=SERVING_FILES, manifest_sha256=record.manifest_sha256
            )
        return Predictor(artifact, threads=self.settings.threads)

    def predict(self, texts: Sequence[str]) -> dict[str, Any]:
        check_texts(texts, self.settings)
        model = self.current()
        predictions = model.predictor.predict(texts)
        return {
            "model_version": model.version,
            "predictions": [{"label": p.label, "scores": p.scores} for p in predictions],
        }
