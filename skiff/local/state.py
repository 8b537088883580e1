"""The local stack's state on disk, so a restart (even after kill -9) finds it again.

moto keeps everything in memory and starts empty. This copies what the stack's users own —
every object of the stack's buckets and every item of its registry table — to
``<work_dir>/state`` and puts it back into a fresh moto on start. Objects are stored by
content hash (an unchanged object is never rewritten) with one index file; each file is
replaced atomically, so a kill mid-save leaves the previous complete snapshot.

Queues and in-flight events are not copied: uploads still under ``incoming/`` are put back
last, which notifies the upload queue again (accepting an upload is idempotent), and the stack
re-announces the outcome of every job it ran (completion is idempotent too).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skiff.data.versions import INCOMING


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(path)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs"
        self.index_path = directory / "objects.json"
        self.tables_path = directory / "tables.json"

    def _index(self) -> dict[str, dict[str, dict[str, str]]]:
        return json.loads(self.index_path.read_text()) if self.index_path.is_file() else {}

    def save(self, s3: Any, dynamodb: Any, buckets: Iterable[str], tables: Iterable[str]) -> None:
        """Snapshot the buckets, then the tables (in that order: an upload accepted between the
        two is then either still in incoming/ or already in the table, never neither)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        previous, index = self._index(), {}
        for bucket in buckets:
            index[bucket] = {}
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for entry in page.get("Contents", []):
                    key, etag = entry["Key"], entry["ETag"]
                    known = previous.get(bucket, {}).get(key)
                    if known is not None and known["etag"] == etag and (self.blobs / known["sha256"]).is_file():
                        index[bucket][key] = known
                        continue
                    response = s3.get_object(Bucket=bucket, Key=key)
                    body = response["Body"].read()
                    digest = hashlib.sha256(body).hexdigest()
                    if not (self.blobs / digest).is_file():
                        _write_atomically(self.blobs / digest, body)
                    index[bucket][key] = {
                        "etag": etag,
                        "sha256": digest,
                        "content_type": response.get("ContentType") or "binary/octet-stream",
                    }
        items: dict[str, list[dict[str, Any]]] = {}
        for table in tables:
            items[table] = [
                item
                for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
                for item in page["Items"]
            ]
        _write_atomically(self.tables_path, json.dumps(items).encode())
        _write_atomically(self.index_path, json.dumps(index).encode())
        referenced = {entry["sha256"] for objects in index.values() for entry in objects.values()}
        for blob in self.blobs.iterdir():
            if blob.name not in referenced and not blob.name.endswith(".partial"):
                blob.unlink(missing_ok=True)

    def restore(self, s3: Any, dynamodb: Any) -> dict[str, int]:
        """Put the snapshot back (tables first, then objects, incoming/ last); keys that already
        exist are left as they are. Returns how many items and objects came back."""
        counts = {"items": 0, "objects": 0}
        if self.tables_path.is_file():
            for table, items in json.loads(self.tables_path.read_text()).items():
                for item in items:
                    dynamodb.put_item(TableName=table, Item=item)
                    counts["items"] += 1
        index = self._index()
        ordered = sorted(
            ((bucket, key, entry) for bucket, objects in index.items() for key, entry in objects.items()),
            key=lambda row: (row[1].startswith(INCOMING), row[0], row[1]),
        )
        for bucket, key, entry in ordered:
            blob = self.blobs / entry["sha256"]
            if not blob.is_file() or _exists(s3, bucket, key):
                continue
            s3.put_object(Bucket=bucket, Key=key, Body=blob.read_bytes(), ContentType=entry["content_type"])
            counts["objects"] += 1
        return counts


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False
