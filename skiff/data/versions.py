"""Uploaded data becomes immutable, versioned datasets.

An upload lands under ``incoming/`` in the data bucket. :meth:`DatasetCatalog.accept_upload`
validates it while streaming (bounded memory) and then either

- rejects it: the file moves to ``quarantine/<name>`` and ``rejections/<name>.json`` says why
  (reason, line numbers, the first problems found) — nothing is lost, nothing is trained; or
- accepts it: the file moves to ``datasets/parts/<sha256>.csv`` (content-addressed, so the
  same bytes uploaded twice are one part) and a new dataset version lists every accepted part
  so far. Re-uploading identical content creates no new version.

Versions (``ds-000001``, ``ds-000002``…) are cumulative and immutable. The head pointer and
each version's record live in the registry table and change in one conditional transaction,
so concurrent uploads never lose a part. Each version also gets two files in S3:
``datasets/versions/<v>/manifest.json`` (what it holds) and ``…/channel.manifest`` (a
SageMaker ManifestFile naming exactly its parts, used as the training channel).
"""

from __future__ import annotations

import json
import logging
import posixpath
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from skiff import dynamo
from skiff.aws import client
from skiff.data.dataset import CsvLimits, CsvSummary, Example, byte_lines, iter_examples
from skiff.errors import ConflictError, DatasetError, Problem

log = logging.getLogger(__name__)

INCOMING, QUARANTINE, REJECTIONS = "incoming/", "quarantine/", "rejections/"
PARTS, VERSIONS = "datasets/parts/", "datasets/versions/"
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class UploadOutcome:
    key: str
    status: str  # "accepted", "duplicate", "rejected", "ignored"
    dataset_version: str | None = None
    revision: int | None = None
    reason: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetVersion:
    version: str
    revision: int
    parts: list[dict[str, Any]]
    rows: int
    label_counts: dict[str, int]
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_version": self.version,
            "revision": self.revision,
            "rows": self.rows,
            "label_counts": self.label_counts,
            "parts": self.parts,
            "created_at": self.created_at,
        }


def version_name(revision: int) -> str:
    return f"ds-{revision:06d}"


def upload_name(key: str) -> str:
    """``incoming/team/a.csv`` -> ``team/a.csv``: where it goes under quarantine/ and rejections/."""
    return key[len(INCOMING) :] if key.startswith(INCOMING) else key


class DatasetCatalog:
    def __init__(
        self, table: str, data_bucket: str, limits: CsvLimits = CsvLimits(), dynamodb: Any = None, s3: Any = None
    ) -> None:
        self.table, self.bucket, self.limits = table, data_bucket, limits
        self._dynamodb, self._s3 = dynamodb, s3

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = client("dynamodb")
        return self._dynamodb

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = client("s3")
        return self._s3

    # ---- reading -----------------------------------------------------------------------
    def head(self) -> DatasetVersion | None:
        pointer = dynamo.get(self.dynamodb, self.table, "DATASET", "HEAD")
        return self.get(pointer["version"]) if pointer else None

    def get(self, version: str) -> DatasetVersion:
        item = dynamo.get(self.dynamodb, self.table, "DATASET", f"VERSION#{version}")
        if item is None:
            raise DatasetError(
                version, [Problem(f"expected a dataset version (got: {version!r}, which does not exist)")]
            )
        return DatasetVersion(
            item["version"], item["revision"], item["parts"], item["rows"], item["label_counts"], item["created_at"]
        )

    def channel_manifest_uri(self, version: str) -> str:
        return f"s3://{self.bucket}/{VERSIONS}{version}/channel.manifest"

    def examples(self, version: str) -> Iterator[Example]:
        """Every row of a dataset version, part by part (streamed from S3)."""
        for part in self.get(version).parts:
            body = self.s3.get_object(Bucket=self.bucket, Key=part["key"])["Body"]
            yield from iter_examples(byte_lines(body.read, part["key"]), part["key"], self._part_limits())

    def _part_limits(self) -> CsvLimits:
        # One part may hold a single class; the two-label rule applies to the whole dataset.
        limits = self.limits
        return CsvLimits(limits.max_bytes, limits.max_rows, limits.max_text_chars, limits.max_problems, 1)

    # ---- accepting uploads ---------------------------------------------------------------
    def accept_upload(self, key: str, received_size: int | None = None) -> UploadOutcome:
        if not key.startswith(INCOMING) or key.endswith("/"):
            return UploadOutcome(key, "ignored", reason=f"expected a key under {INCOMING} (got: {key!r})")
        try:
            summary = self._validate(key, received_size)
        except DatasetError as exc:
            self._quarantine(key, exc)
            return UploadOutcome(key, "rejected", reason=exc.reason, problems=[p.to_dict() for p in exc.problems])
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                # Already moved by an earlier delivery of the same event: nothing left to do.
                return UploadOutcome(key, "ignored", reason="already processed (object no longer in incoming/)")
            raise
        part_key = f"{PARTS}{summary.sha256}.csv"
        self.s3.copy_object(Bucket=self.bucket, Key=part_key, CopySource={"Bucket": self.bucket, "Key": key})
        part = {
            "sha256": summary.sha256,
            "key": part_key,
            "rows": summary.rows,
            "bytes": summary.bytes,
            "label_counts": dict(sorted(summary.label_counts.items())),
            "source_key": key,
            "accepted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        version, created = self._add_part(part)
        self.write_manifests(version)
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return UploadOutcome(key, "accepted" if created else "duplicate", version.version, version.revision)

    def _validate(self, key: str, received_size: int | None) -> CsvSummary:
        size = (
            received_size
            if received_size is not None
            else self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        )
        if size > self.limits.max_bytes:
            # Refuse before reading a byte: the size alone decides.
            raise DatasetError(key, [Problem(f"expected at most {self.limits.max_bytes} bytes (got: {size})")])
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        summary = CsvSummary()
        for _ in iter_examples(byte_lines(body.read, key), key, self.limits, summary):
            pass  # streaming: rows are counted and hashed, never held
        return summary

    def _quarantine(self, key: str, error: DatasetError) -> None:
        name = upload_name(key)
        self.s3.copy_object(Bucket=self.bucket, Key=QUARANTINE + name, CopySource={"Bucket": self.bucket, "Key": key})
        report = {
            **error.to_dict(),
            "key": key,
            "quarantined_as": QUARANTINE + name,
            "rejected_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "what_to_do": "fix the problems listed (line numbers count from 1, the header is line 1) and upload again",
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=f"{REJECTIONS}{name}.json",
            Body=json.dumps(report, indent=2).encode(),
            ContentType="application/json",
        )
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        log.warning("upload rejected: %s", error, extra={"key": key, "problems": error.to_dict()["problems"]})

    def _add_part(self, part: dict[str, Any]) -> tuple[DatasetVersion, bool]:
        """Make a new version with ``part`` unless the head already has it. Atomic, retried on races."""
        for attempt in range(MAX_ATTEMPTS):
            head = self.head()
            if head is not None and any(p["sha256"] == part["sha256"] for p in head.parts):
                return head, False
            revision = (head.revision if head else 0) + 1
            parts = [*(head.parts if head else []), part]
            labels: Counter[str] = Counter()
            for p in parts:
                labels.update(p["label_counts"])
            version = DatasetVersion(
                version_name(revision),
                revision,
                parts,
                sum(p["rows"] for p in parts),
                dict(sorted(labels.items())),
                datetime.now(UTC).isoformat(timespec="seconds"),
            )
            try:
                self.dynamodb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": dynamo.to_item(
                                    {"pk": "DATASET", "sk": "HEAD", "version": version.version, "revision": revision}
                                ),
                                "ConditionExpression": "revision = :previous" if head else "attribute_not_exists(pk)",
                                **(
                                    {"ExpressionAttributeValues": dynamo.values(previous=head.revision)} if head else {}
                                ),
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": dynamo.to_item(
                                    {
                                        "pk": "DATASET",
                                        "sk": f"VERSION#{version.version}",
                                        **{k: v for k, v in version.to_dict().items() if k != "dataset_version"},
                                        "version": version.version,
                                    }
                                ),
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                    ]
                )
                return version, True
            except ClientError as exc:
                if not dynamo.cancelled(exc):
                    raise
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise ConflictError(f"expected to add a dataset part within {MAX_ATTEMPTS} attempts (got: constant races)")

    def write_manifests(self, version: DatasetVersion) -> None:
        """The version's S3 files, derived from its record: safe to write again after a crash."""
        prefix = f"{VERSIONS}{version.version}/"
        self.s3.put_object(
            Bucket=self.bucket,
            Key=prefix + "manifest.json",
            Body=json.dumps({**version.to_dict(), "bucket": self.bucket}, indent=2).encode(),
            ContentType="application/json",
        )
        # SageMaker ManifestFile: a common prefix, then object keys relative to it.
        channel = [{"prefix": f"s3://{self.bucket}/{PARTS}"}] + [posixpath.basename(p["key"]) for p in version.parts]
        self.s3.put_object(Bucket=self.bucket, Key=prefix + "channel.manifest", Body=json.dumps(channel).encode())
