"""Model artifacts on S3: publish a verified directory, fetch and verify it again.

Layout: ``s3://<bucket>/models/<version>/<file>`` for every file of the artifact, manifest
included. Whoever fetches re-verifies every file against the manifest, so an object
altered in the bucket is refused before it can serve.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from skiff.aws import LazyClient
from skiff.errors import ArtifactError
from skiff.model.artifact import MANIFEST, ModelArtifact, load_artifact, required_files, sha256_file

MODELS_PREFIX = "models/"


@dataclass(frozen=True)
class PublishedArtifact:
    uri: str
    manifest_sha256: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ArtifactError(f"expected an s3://bucket/prefix/ URI (got: {uri!r})")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


class ArtifactStore:
    s3 = LazyClient("s3")

    def __init__(self, bucket: str, s3: Any | None = None) -> None:
        self.bucket = bucket
        self.s3 = s3

    def uri(self, version: str) -> str:
        return f"s3://{self.bucket}/{MODELS_PREFIX}{version}/"

    def publish(self, directory: Path, version: str) -> PublishedArtifact:
        """Verify locally, upload every file, manifest last (its presence means complete)."""
        artifact = load_artifact(directory)
        prefix = f"{MODELS_PREFIX}{version}/"
        for name in artifact.manifest["files"]:
            self.s3.upload_file(str(directory / name), self.bucket, prefix + name)
        self.s3.upload_file(str(directory / MANIFEST), self.bucket, prefix + MANIFEST)
        return PublishedArtifact(self.uri(version), artifact.manifest_sha256)

    def fetch(
        self, uri: str, destination: Path, only: Iterable[str] | None = None, manifest_sha256: str | None = None
    ) -> ModelArtifact:
        """Download (a subset of) an artifact and verify it; ``manifest_sha256`` pins the manifest too.

        Files land in a scratch directory first and move into ``destination`` only once
        verified, so a half-downloaded or tampered artifact never sits where a loader looks.
        """
        bucket, prefix = parse_s3_uri(uri)
        destination.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=destination.parent))
        try:
            self._download(bucket, prefix + MANIFEST, scratch / MANIFEST)
            if manifest_sha256 is not None and (actual := sha256_file(scratch / MANIFEST)) != manifest_sha256:
                raise ArtifactError(
                    f"expected {uri}{MANIFEST} with sha256 {manifest_sha256[:16]}… as registered (got: {actual[:16]}…)"
                )
            manifest = json.loads((scratch / MANIFEST).read_text())
            names = list(only) if only is not None else None
            wanted = required_files(manifest, names) if names is not None else list(manifest["files"])
            for name in wanted:
                self._download(bucket, prefix + name, scratch / name)
            verified = load_artifact(scratch, only=names)  # raises on any mismatch
            if destination.exists():
                shutil.rmtree(destination)
            scratch.rename(destination)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return replace(verified, directory=destination)

    def _download(self, bucket: str, key: str, path: Path) -> None:
        # One GET streamed to disk: download_file's transfer manager (HEAD, ranged GETs,
        # a thread pool) costs more than it saves for tens of MB on a cold Lambda.
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            with path.open("wb") as handle:
                for chunk in body.iter_chunks(chunk_size=1 << 20):
                    handle.write(chunk)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NoSuchBucket"):
                raise ArtifactError(f"expected s3://{bucket}/{key} (got: {code})") from exc
            raise
