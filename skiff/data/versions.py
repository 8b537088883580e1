"""Uploaded data becomes immutable, versioned datasets.

An upload lands under ``incoming/`` in the data bucket. :meth:`DatasetCatalog.accept_upload`
validates it while streaming (bounded memory) and then either

- rejects it: the file moves to ``quarantine/<name>`` and ``rejections/<name>.json`` says why
  (reason, line numbers, the first problems found) — nothing is lost, nothing is trained; or
- accepts it: the file moves to ``datasets/parts/<sha256>.csv`` (content-addressed, so the
  same bytes uploaded twice are one part) and a new dataset version lists every accepted part
  so far. Re-uploading identical content creates no new version.

Versions (``ds-000001``, ``ds-000002``…) are cumulative and immutable: version N holds the
parts of version N-1 plus one. The registry table keeps small items only — the head pointer,
each version's summary (counts, a chained hash of its parts), the part that version added and
a marker per part hash — written in one conditional transaction, so concurrent uploads never
lose a part and a duplicate is found with one read, however many parts exist (one DynamoDB
item holds at most 400 KB). The full part list lives in S3: ``datasets/versions/<v>/
manifest.json`` (what the version holds) and ``…/channel.manifest`` (a SageMaker ManifestFile
naming exactly its parts, the training channel), each built from the previous version's.
"""

from __future__ import annotations

import hashlib
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

from botocore.exceptions import ClientError, FlexibleChecksumError

from skiff import dynamo
from skiff.aws import LazyClient
from skiff.data.dataset import CsvLimits, CsvSummary, Example, byte_lines, iter_examples
from skiff.errors import ConfigError, ConflictError, DatasetError, Problem

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

    def log_fields(self) -> dict[str, Any]:
        """What may be logged: no reason or problem text, which can quote the uploaded data."""
        return {
            "key": self.key,
            "status": self.status,
            "dataset_version": self.dataset_version,
            "revision": self.revision,
            "problem_count": len(self.problems),
            "problem_lines": [p.get("line") for p in self.problems],
        }


@dataclass(frozen=True)
class DatasetVersion:
    """A version's summary; its part list is in S3 (:meth:`DatasetCatalog.parts`)."""

    version: str
    revision: int
    rows: int
    label_counts: dict[str, int]
    created_at: str
    parts_count: int
    parts_hash: str  # sha256 chained over the parts' hashes, oldest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_version": self.version,
            "revision": self.revision,
            "rows": self.rows,
            "label_counts": self.label_counts,
            "parts_count": self.parts_count,
            "parts_hash": self.parts_hash,
            "created_at": self.created_at,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> DatasetVersion:
        return cls(
            item["version"],
            item["revision"],
            item["rows"],
            item["label_counts"],
            item["created_at"],
            item["parts_count"],
            item["parts_hash"],
        )


def version_name(revision: int) -> str:
    return f"ds-{revision:06d}"


def upload_name(key: str) -> str:
    """``incoming/team/a.csv`` -> ``team/a.csv``: where it goes under quarantine/ and rejections/.

    A key ending in "/" loses it (``incoming/team/`` -> ``team``), so its report is ``team.json``."""
    name = key[len(INCOMING) :] if key.startswith(INCOMING) else key
    return name.rstrip("/") or "unnamed"


class DatasetCatalog:
    s3 = LazyClient("s3")
    dynamodb = LazyClient("dynamodb")

    def __init__(
        self, table: str, data_bucket: str, limits: CsvLimits = CsvLimits(), dynamodb: Any = None, s3: Any = None
    ) -> None:
        self.table, self.bucket, self.limits = table, data_bucket, limits
        self.dynamodb, self.s3 = dynamodb, s3

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
        return DatasetVersion.from_item(item)

    def versions(self, limit: int = 50) -> list[DatasetVersion]:
        """The newest ``limit`` dataset versions, newest first (their zero-padded names sort)."""
        response = self.dynamodb.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues=dynamo.values(pk="DATASET", prefix="VERSION#"),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [DatasetVersion.from_item(dynamo.from_item(item)) for item in response["Items"]]

    def rejections(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` rejection reports (``rejections/<name>.json``), newest first."""
        objects = [
            o
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=REJECTIONS)
            for o in page.get("Contents", [])
            if o["Key"].endswith(".json")
        ]
        objects.sort(key=lambda o: o["LastModified"], reverse=True)
        return [{**json.loads(self._read(o["Key"])), "report": o["Key"]} for o in objects[:limit]]

    def first_version_with(self, sha256: str) -> DatasetVersion | None:
        """The version that added a part with these bytes (every later one holds it too), or None.

        Read from the part hash's own marker, which the adding transaction wrote with that
        version: reading the head and then asking whether the part exists would race a
        concurrent upload and name a version from before the part.
        """
        marker = dynamo.get(self.dynamodb, self.table, "DATASET", f"PARTHASH#{sha256}")
        return self.get(version_name(int(marker["revision"]))) if marker else None

    def parts(self, version: str, rebuild: bool = True) -> list[dict[str, Any]]:
        """The version's parts, oldest first, from its manifest in S3 (written first if missing)."""
        key = f"{VERSIONS}{version}/manifest.json"
        try:
            return json.loads(self._read(key))["parts"]
        except ClientError as exc:
            if not rebuild or exc.response["Error"]["Code"] not in ("NoSuchKey", "404"):
                raise
        self.write_manifests(self.get(version))
        return json.loads(self._read(key))["parts"]

    def channel_manifest_uri(self, version: str) -> str:
        return f"s3://{self.bucket}/{VERSIONS}{version}/channel.manifest"

    def examples(self, version: str) -> Iterator[Example]:
        """Every row of a dataset version, part by part (streamed from S3)."""
        for part in self.parts(version):
            body = self.s3.get_object(Bucket=self.bucket, Key=part["key"])["Body"]
            yield from iter_examples(byte_lines(body.read, part["key"]), part["key"], self._part_limits())

    def _part_limits(self) -> CsvLimits:
        # One part may hold a single class; the two-label rule applies to the whole dataset.
        limits = self.limits
        return CsvLimits(limits.max_bytes, limits.max_rows, limits.max_text_chars, limits.max_problems, 1)

    # ---- accepting uploads ---------------------------------------------------------------
    def accept_upload(self, key: str, received_size: int | None = None) -> UploadOutcome:
        if not key.startswith(INCOMING):
            return UploadOutcome(key, "ignored", reason=f"expected a key under {INCOMING} (got: {key!r})")
        try:
            if key.endswith("/"):
                return self._folder_key(key, received_size)
            summary = self._validate(key, received_size)
        except DatasetError as exc:
            self._quarantine(key, exc)
            return UploadOutcome(key, "rejected", reason=exc.reason, problems=[p.to_dict() for p in exc.problems])
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("NoSuchKey", "404"):
                # Already moved by an earlier delivery of the same event: nothing left to do.
                return UploadOutcome(key, "ignored", reason="already processed (object no longer in incoming/)")
            if code in ("403", "AccessDenied"):
                # S3 answers 403 for a missing key when the caller may not list the bucket, so a
                # redelivered event would look forbidden; the stack grants s3:ListBucket to avoid it.
                raise ConfigError(
                    f"expected to read s3://{self.bucket}/{key} or learn that it is gone (got: 403 access denied); "
                    "the function needs s3:GetObject on incoming/* and s3:ListBucket on the bucket"
                ) from exc
            raise
        earlier = self.first_version_with(summary.sha256)
        if earlier is not None:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            return UploadOutcome(key, "duplicate", earlier.version, earlier.revision)
        part_key = f"{PARTS}{summary.sha256}.csv"
        try:
            self._copy(key, part_key)
            self._read_back(part_key, summary.sha256)
        except DatasetError as exc:
            # A stored copy that cannot be read would break this version and every later one
            # (versions are cumulative): keep the upload in quarantine instead, with the reason.
            self.s3.delete_object(Bucket=self.bucket, Key=part_key)
            self._quarantine(key, exc)
            return UploadOutcome(key, "rejected", reason=exc.reason, problems=[p.to_dict() for p in exc.problems])
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
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return UploadOutcome(key, "accepted" if created else "duplicate", version.version, version.revision)

    def _copy(self, source: str, target: str) -> None:
        # A multipart upload (``aws s3 cp`` of 8 MiB or more) carries a checksum of its parts'
        # checksums; a plain copy keeps it and later reads fail checksum validation. Ask S3 for
        # a full-object CRC32 of the copy instead, so every later read verifies cleanly.
        self.s3.copy_object(
            Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source}, ChecksumAlgorithm="CRC32"
        )

    def _read_back(self, part_key: str, sha256: str) -> None:
        """Read the stored copy as training and the gate will (checksums validated) and compare bytes."""
        digest = hashlib.sha256()
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=part_key)["Body"]
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
        except FlexibleChecksumError as exc:
            raise DatasetError(
                part_key, [Problem(f"expected the stored copy to read back with a valid checksum (got: {exc})")]
            ) from exc
        if digest.hexdigest() != sha256:
            raise DatasetError(
                part_key, [Problem(f"expected the stored copy to hash to {sha256} (got: {digest.hexdigest()})")]
            )

    def _folder_key(self, key: str, received_size: int | None) -> UploadOutcome:
        """An empty key ending in "/" is a console's folder marker; one with content is a file
        without a name: rejected like any bad upload, so it does not sit in incoming/ unexplained."""
        size = self._size(key, received_size)
        if size == 0:
            return UploadOutcome(key, "ignored", reason="a folder marker (empty, its key ends in '/')")
        problem = f"expected a file name after the last '/' (got: a key ending in '/', {size} bytes)"
        raise DatasetError(key, [Problem(problem)])

    def _size(self, key: str, received_size: int | None) -> int:
        if received_size is not None:
            return received_size
        return int(self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def _validate(self, key: str, received_size: int | None) -> CsvSummary:
        size = self._size(key, received_size)
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
        self._copy(key, QUARANTINE + name)
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
        # Line numbers only: problem messages can quote the upload (a headerless file's first row).
        lines = [p.line for p in error.problems]
        log.warning("upload rejected", extra={"key": key, "report": f"{REJECTIONS}{name}.json", "problem_lines": lines})

    def _add_part(self, part: dict[str, Any]) -> tuple[DatasetVersion, bool]:
        """Make a new version with ``part`` unless some version already has it. Atomic, retried on races.

        Four small items change together: the head pointer (guarded by its revision), the new
        version's summary, the part it adds (``PART#<revision>``) and the part hash's marker
        (guarded: a second copy of the same bytes cancels the transaction).
        """
        for attempt in range(MAX_ATTEMPTS):
            earlier = self.first_version_with(part["sha256"])
            if earlier is not None:
                return earlier, False
            head = self.head()
            revision = (head.revision if head else 0) + 1
            labels: Counter[str] = Counter(head.label_counts if head else {})
            labels.update(part["label_counts"])
            previous_hash = head.parts_hash if head else ""
            version = DatasetVersion(
                version_name(revision),
                revision,
                (head.rows if head else 0) + part["rows"],
                dict(sorted(labels.items())),
                datetime.now(UTC).isoformat(timespec="seconds"),
                (head.parts_count if head else 0) + 1,
                hashlib.sha256(f"{previous_hash}{part['sha256']}".encode()).hexdigest(),
            )
            new_items = [
                {"sk": f"VERSION#{version.version}", **version.to_dict(), "version": version.version},
                {"sk": f"PART#{revision:010d}", **part, "revision": revision},
                {"sk": f"PARTHASH#{part['sha256']}", "revision": revision},
            ]
            head_put = {
                "TableName": self.table,
                "Item": dynamo.to_item(
                    {"pk": "DATASET", "sk": "HEAD", "version": version.version, "revision": revision}
                ),
                "ConditionExpression": "revision = :previous" if head else "attribute_not_exists(pk)",
                **({"ExpressionAttributeValues": dynamo.values(previous=head.revision)} if head else {}),
            }
            try:
                self.dynamodb.transact_write_items(
                    TransactItems=[
                        {"Put": head_put},
                        *(
                            {
                                "Put": {
                                    "TableName": self.table,
                                    "Item": dynamo.to_item({"pk": "DATASET", **item}),
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            }
                            for item in new_items
                        ),
                    ]
                )
                return version, True
            except ClientError as exc:
                if not dynamo.cancelled(exc):
                    raise
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise ConflictError(f"expected to add a dataset part within {MAX_ATTEMPTS} attempts (got: constant races)")

    def write_manifests(self, version: DatasetVersion) -> None:
        """The version's S3 files: the newest earlier version's part list that exists in S3, plus
        the parts added since (``PART#`` records, one query). The upload trigger calls it once per
        batch for the head before scheduling training, so accepting an upload writes no manifest
        and costs the same at any dataset size; versions in between get theirs when first read.
        """
        prefix = f"{VERSIONS}{version.version}/"
        if self._exists(prefix + "channel.manifest"):
            return  # a version's manifests never change once written (the channel is written last)
        base, previous = version.revision - 1, []
        while base >= 1:
            try:
                previous = self.parts(version_name(base), rebuild=False)
                break
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("NoSuchKey", "404"):
                    raise
                base -= 1
        added = self._part_records(base + 1, version.revision)
        if len(added) != version.revision - base:
            raise ConflictError(
                f"expected {version.revision - base} part records after {version_name(max(base, 1))} "
                f"(got: {len(added)})"
            )
        parts = [*previous, *added]
        self.s3.put_object(
            Bucket=self.bucket,
            Key=prefix + "manifest.json",
            Body=json.dumps({**version.to_dict(), "parts": parts, "bucket": self.bucket}).encode(),
            ContentType="application/json",
        )
        # SageMaker ManifestFile: a common prefix, then object keys relative to it.
        channel = [{"prefix": f"s3://{self.bucket}/{PARTS}"}] + [posixpath.basename(p["key"]) for p in parts]
        self.s3.put_object(Bucket=self.bucket, Key=prefix + "channel.manifest", Body=json.dumps(channel).encode())

    def _part_records(self, first: int, last: int) -> list[dict[str, Any]]:
        """The parts added by revisions ``first``..``last``, in order."""
        records: list[dict[str, Any]] = []
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": dynamo.values(
                pk="DATASET", first=f"PART#{first:010d}", last=f"PART#{last:010d}"
            ),
            "ConsistentRead": True,
        }
        while True:
            page = self.dynamodb.query(**query)
            records += [
                {k: v for k, v in dynamo.from_item(item).items() if k not in ("pk", "sk", "revision")}
                for item in page.get("Items", [])
            ]
            if "LastEvaluatedKey" not in page:
                return records
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return False
            raise

    def _read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
