from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from skiff.model.artifact import load_artifact
from skiff.registry.artifacts import ArtifactStore
from skiff.registry.table import Registry, create_table, metrics_summary, new_version_id

TABLE, BUCKET = "skiff-registry", "skiff-artifacts"


@dataclass
class Stack:
    """The AWS side of serving, in moto: registry table, artifacts bucket, published models."""

    registry: Registry
    store: ArtifactStore
    cache_dir: Path

    def publish(self, artifact_dir: Path) -> str:
        artifact = load_artifact(artifact_dir)
        version = new_version_id()
        published = self.store.publish(artifact_dir, version)
        self.registry.register(
            version=version,
            artifact_uri=published.uri,
            manifest_sha256=published.manifest_sha256,
            metrics=metrics_summary(artifact.metrics()),
            lineage={"dataset_version": "test"},
        )
        return version


@pytest.fixture
def stack(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    create_table(TABLE)
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    cache_dir = tmp_path / "model-cache"
    for name, value in {
        "SKIFF_REGISTRY_TABLE": TABLE,
        "SKIFF_ARTIFACTS_BUCKET": BUCKET,
        "SKIFF_MODEL_CACHE_DIR": str(cache_dir),
        "SKIFF_ALIAS_TTL_SECONDS": "0",
        "POWERTOOLS_METRICS_NAMESPACE": "SkiffTest",
    }.items():
        monkeypatch.setenv(name, value)
    yield Stack(Registry(TABLE), ArtifactStore(BUCKET), cache_dir)
    shutil.rmtree(cache_dir, ignore_errors=True)
