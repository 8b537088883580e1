"""Dataset versions on S3 and DynamoDB: how uploads that S3 or IAM treat specially are handled."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from skiff import dynamo
from skiff.cli.client import StackClient, StackOutputs
from skiff.data.versions import INCOMING, PARTS, VERSIONS, DatasetCatalog, DatasetVersion, version_name
from skiff.errors import ConfigError
from skiff.registry.table import create_table

BUCKET, TABLE = "skiff-data", "skiff-registry"


def test_a_403_for_an_upload_names_the_missing_list_permission() -> None:
    """S3 answers 403 for a missing key when the caller may not list the bucket (FACTS.md)."""
    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(s3) as stub:
        stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
        catalog = DatasetCatalog("table", BUCKET, s3=s3, dynamodb=object())
        with pytest.raises(ConfigError, match=r"got: 403 access denied.*s3:ListBucket on the bucket"):
            catalog.accept_upload("incoming/gone.csv")


def test_a_404_for_an_upload_means_an_earlier_delivery_moved_it(aws: None) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    outcome = DatasetCatalog("table", BUCKET, s3=s3, dynamodb=object()).accept_upload("incoming/gone.csv")
    assert outcome.status == "ignored" and "already processed" in (outcome.reason or "")


def seed_version(s3: Any, dynamodb: Any, table: str, parts: int) -> list[dict[str, Any]]:
    """A dataset version with ``parts`` parts, written straight into the catalog's layout (head,
    summary, marker of the first part, S3 manifests): accepting that many uploads one by one
    would take hours. Returns the parts."""
    records = [
        {
            "sha256": f"{i:064x}",
            "key": f"{PARTS}{i:064x}.csv",
            "rows": 10,
            "bytes": 400,
            "label_counts": {"ham": 9, "spam": 1},
            "source_key": f"incoming/part-{i}.csv",
            "accepted_at": "2026-12-01T00:00:00+00:00",
        }
        for i in range(1, parts + 1)
    ]
    version = DatasetVersion(
        version_name(parts), parts, 10 * parts, {"ham": 9 * parts, "spam": parts}, "2026-12-01", parts, "seeded"
    )
    items = [
        {"sk": "HEAD", "version": version.version, "revision": parts},
        {"sk": f"VERSION#{version.version}", **version.to_dict(), "version": version.version},
        {"sk": f"PARTHASH#{records[0]['sha256']}", "revision": 1},
    ]
    for item in items:
        dynamodb.put_item(TableName=table, Item=dynamo.to_item({"pk": "DATASET", **item}))
    body = {**version.to_dict(), "parts": records, "bucket": BUCKET}
    s3.put_object(Bucket=BUCKET, Key=f"{VERSIONS}{version.version}/manifest.json", Body=json.dumps(body).encode())
    return records


@pytest.fixture
def catalog(aws: None) -> DatasetCatalog:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_table(TABLE)
    return DatasetCatalog(TABLE, BUCKET, s3=s3, dynamodb=boto3.client("dynamodb"))


def _upload(catalog: DatasetCatalog, name: str, text: str) -> str:
    key = f"{INCOMING}{name}"
    catalog.s3.put_object(Bucket=BUCKET, Key=key, Body=f"text,label\n{text},ham\nwin cash now,spam\n".encode())
    return key


def test_a_version_of_10000_parts_takes_one_more_with_small_items_only(catalog: DatasetCatalog) -> None:
    seed_version(catalog.s3, catalog.dynamodb, TABLE, 10_000)
    outcome = catalog.accept_upload(_upload(catalog, "new.csv", "see you at lunch"))
    assert (outcome.status, outcome.dataset_version) == ("accepted", "ds-010001")
    parts = catalog.parts("ds-010001")
    assert len(parts) == 10_001 and parts[-1]["source_key"] == "incoming/new.csv"
    channel = json.loads(catalog._read(f"{VERSIONS}ds-010001/channel.manifest"))
    assert len(channel) == 1 + 10_001
    head = catalog.head()
    assert head is not None and (head.parts_count, head.rows) == (10_001, 100_002)
    items = catalog.dynamodb.scan(TableName=TABLE)["Items"]
    assert max(len(json.dumps(item)) for item in items) < 4_000  # DynamoDB's limit is 400 KB


def test_bytes_seen_in_any_earlier_version_make_no_new_version(catalog: DatasetCatalog) -> None:
    catalog.accept_upload(_upload(catalog, "a.csv", "see you at lunch"))
    again = catalog.accept_upload(_upload(catalog, "copy-of-a.csv", "see you at lunch"))
    assert (again.status, again.dataset_version) == ("duplicate", "ds-000001")


def test_a_duplicate_names_the_version_that_added_its_bytes_not_the_head(catalog: DatasetCatalog) -> None:
    catalog.accept_upload(_upload(catalog, "a.csv", "see you at lunch"))
    catalog.accept_upload(_upload(catalog, "b.csv", "call me later"))
    again = catalog.accept_upload(_upload(catalog, "copy-of-a.csv", "see you at lunch"))
    assert (again.status, again.dataset_version, again.revision) == ("duplicate", "ds-000001", 1)


def test_an_upload_outcome_names_its_own_version_after_a_later_upload_landed(catalog: DatasetCatalog) -> None:
    # What a client polling right after its upload may see: another upload was accepted between
    # its reads. The head is ds-000002 by then; the upload's own version is still ds-000001.
    catalog.accept_upload(_upload(catalog, "a.csv", "see you at lunch"))
    catalog.accept_upload(_upload(catalog, "b.csv", "call me later"))
    content = b"text,label\nsee you at lunch,ham\nwin cash now,spam\n"
    client = StackClient(StackOutputs("http://127.0.0.1:1", BUCKET, "artifacts", TABLE, "skiff-local"))
    upload = {"key": f"{INCOMING}a.csv", "sha256": hashlib.sha256(content).hexdigest()}
    assert client.upload_outcome(upload, timeout=5) == {"status": "accepted", "dataset_version": "ds-000001", "rows": 2}


def test_versions_are_listed_newest_first_with_their_counts(catalog: DatasetCatalog) -> None:
    for i in range(3):
        catalog.accept_upload(_upload(catalog, f"{i}.csv", f"message {i}"))
    listed = catalog.versions(limit=2)
    assert [(v.version, v.rows, v.parts_count) for v in listed] == [("ds-000003", 6, 3), ("ds-000002", 4, 2)]


def test_rejections_list_each_report_with_its_reason_and_lines(catalog: DatasetCatalog) -> None:
    catalog.s3.put_object(Bucket=BUCKET, Key=f"{INCOMING}bad.csv", Body=b"text,label\nfine,ham\n,spam\n")
    catalog.accept_upload(f"{INCOMING}bad.csv")
    (report,) = catalog.rejections()
    assert (report["key"], report["report"], report["quarantined_as"]) == (
        f"{INCOMING}bad.csv",
        "rejections/bad.csv.json",
        "quarantine/bad.csv",
    )
    assert [p["line"] for p in report["problems"]] == [3]


def test_no_rejections_is_an_empty_list(catalog: DatasetCatalog) -> None:
    assert catalog.rejections() == []


def test_each_version_lists_the_previous_parts_plus_its_own(catalog: DatasetCatalog) -> None:
    for i in range(3):
        catalog.accept_upload(_upload(catalog, f"{i}.csv", f"message {i}"))
    assert [p["source_key"] for p in catalog.parts("ds-000003")] == [f"{INCOMING}{i}.csv" for i in range(3)]
    assert [p["source_key"] for p in catalog.parts("ds-000002")] == [f"{INCOMING}{i}.csv" for i in range(2)]


def test_manifests_are_built_from_the_records_when_first_needed(catalog: DatasetCatalog) -> None:
    for i in range(3):
        catalog.accept_upload(_upload(catalog, f"{i}.csv", f"message {i}"))
    assert not catalog._exists(f"{VERSIONS}ds-000003/manifest.json")  # accepting writes none
    catalog.write_manifests(catalog.get("ds-000003"))
    assert len(json.loads(catalog._read(f"{VERSIONS}ds-000003/channel.manifest"))) == 1 + 3
    assert len(catalog.parts("ds-000002")) == 2  # an in-between version, built on first read


def _upload_multipart(catalog: DatasetCatalog, tmp_path: Path, name: str) -> str:
    """As `aws s3 cp` sends a file of 8 MiB or more: in 8 MiB parts, with a part-wise checksum."""
    from boto3.s3.transfer import TransferConfig

    rows = "".join(f"message number {i} about lunch,ham\nwin {i} pounds now,spam\n" for i in range(150_000))
    path = tmp_path / name
    path.write_text("text,label\n" + rows)
    threshold = 8 * 1024 * 1024
    assert path.stat().st_size > threshold
    catalog.s3.upload_file(str(path), BUCKET, INCOMING + name, Config=TransferConfig(multipart_threshold=threshold))
    return INCOMING + name


def test_a_multipart_upload_becomes_a_part_that_reads_back(catalog: DatasetCatalog, tmp_path: Path) -> None:
    outcome = catalog.accept_upload(_upload_multipart(catalog, tmp_path, "big.csv"))
    assert outcome.status == "accepted"
    assert sum(1 for _ in catalog.examples("ds-000001")) == 300_000


def test_a_stored_copy_that_cannot_be_read_back_is_quarantined_not_versioned(
    catalog: DatasetCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def copy_keeping_the_part_checksum(source: str, target: str) -> None:  # what a plain copy_object does
        catalog.s3.copy_object(Bucket=BUCKET, Key=target, CopySource={"Bucket": BUCKET, "Key": source})

    monkeypatch.setattr(catalog, "_copy", copy_keeping_the_part_checksum)
    outcome = catalog.accept_upload(_upload_multipart(catalog, tmp_path, "big.csv"))
    assert outcome.status == "rejected" and "read back with a valid checksum" in (outcome.reason or "")
    assert catalog.head() is None
    listed = catalog.s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["quarantine/big.csv", "rejections/big.csv.json"]
