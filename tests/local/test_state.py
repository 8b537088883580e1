"""The local stack's state snapshot: what it saves comes back into an empty moto."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto.moto_api._internal.models import moto_api_backend

from skiff.local.state import StateStore
from skiff.registry.table import create_table

BUCKET, TABLE = "skiff-local-data", "skiff-local-registry"


def provision() -> tuple[object, object]:
    s3, dynamodb = boto3.client("s3", region_name="us-east-1"), boto3.client("dynamodb", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    create_table(TABLE, dynamodb)
    return s3, dynamodb


def test_objects_and_items_come_back_into_an_empty_moto(aws: None, tmp_path: Path) -> None:
    s3, dynamodb = provision()
    s3.put_object(Bucket=BUCKET, Key="datasets/parts/a.csv", Body=b"text,label\nhi,ham\n", ContentType="text/csv")
    s3.put_object(Bucket=BUCKET, Key="models/v1/model.int8.onnx", Body=bytes(range(256)) * 100)
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "VERSION"}, "sk": {"S": "v1"}, "status": {"S": "production"}})
    store = StateStore(tmp_path / "state")
    store.save(s3, dynamodb, [BUCKET], [TABLE])

    moto_api_backend.reset()  # a new daemon: moto starts empty
    s3, dynamodb = provision()
    assert store.restore(s3, dynamodb) == {"items": 1, "objects": 2}
    part = s3.get_object(Bucket=BUCKET, Key="datasets/parts/a.csv")
    assert part["Body"].read() == b"text,label\nhi,ham\n" and part["ContentType"] == "text/csv"
    assert s3.get_object(Bucket=BUCKET, Key="models/v1/model.int8.onnx")["Body"].read() == bytes(range(256)) * 100
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "VERSION"}, "sk": {"S": "v1"}})["Item"]
    assert item["status"] == {"S": "production"}


def test_an_unchanged_object_is_not_read_again_and_a_deleted_one_is_forgotten(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, dynamodb = provision()
    s3.put_object(Bucket=BUCKET, Key="keep.csv", Body=b"a")
    s3.put_object(Bucket=BUCKET, Key="gone.csv", Body=b"b")
    store = StateStore(tmp_path / "state")
    store.save(s3, dynamodb, [BUCKET], [TABLE])
    s3.delete_object(Bucket=BUCKET, Key="gone.csv")
    reads: list[str] = []
    original = s3.get_object
    monkeypatch.setattr(s3, "get_object", lambda **kw: reads.append(kw["Key"]) or original(**kw))
    store.save(s3, dynamodb, [BUCKET], [TABLE])
    assert reads == []
    assert set(store._index()[BUCKET]) == {"keep.csv"}
    assert len(list(store.blobs.iterdir())) == 1  # the deleted object's blob went too


def test_uploads_still_in_incoming_are_put_back_last(aws: None, tmp_path: Path) -> None:
    s3, dynamodb = provision()
    for key in ("incoming/new.csv", "datasets/parts/b.csv", "rejections/x.json"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    store = StateStore(tmp_path / "state")
    store.save(s3, dynamodb, [BUCKET], [TABLE])
    moto_api_backend.reset()
    s3, dynamodb = provision()
    order: list[str] = []
    original = s3.put_object
    s3.put_object = lambda **kw: order.append(kw["Key"]) or original(**kw)  # type: ignore[method-assign]
    store.restore(s3, dynamodb)
    assert order[-1] == "incoming/new.csv"  # its notification re-drives the upload trigger after the rest
