"""Accepting one more upload into a dataset of 10 parts vs 10,000 parts, side by side (moto).

    .venv/bin/python benchmarks/bench_dataset_versions.py [--out benchmarks/results/dataset_versions.json]

For each size, a fresh in-process moto account gets a dataset version of that many parts
(written straight into the catalog's layout), then ``DatasetCatalog.accept_upload`` takes
``--uploads`` new small files one after another; the script reports the median and max time of
one acceptance, the time to write the head's manifests (once per SQS batch, before the job is
scheduled: a SageMaker ManifestFile names every part, so that write grows with the dataset),
the largest DynamoDB item, and the manifest's size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine  # noqa: E402

REGION = "eu-west-1"


def measure(parts: int, uploads: int) -> dict[str, float]:
    import boto3
    from moto import mock_aws

    from skiff.aws import reset_clients
    from skiff.data.versions import INCOMING, VERSIONS, DatasetCatalog
    from skiff.registry.table import create_table
    from tests.skiff.data.test_versions import BUCKET, TABLE, seed_version

    reset_clients()
    with mock_aws():
        s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        create_table(TABLE)
        seed_version(s3, dynamodb, TABLE, parts)
        catalog = DatasetCatalog(TABLE, BUCKET, s3=s3, dynamodb=dynamodb)
        seconds = []
        for i in range(uploads):
            key = f"{INCOMING}bench-{i}.csv"
            s3.put_object(Bucket=BUCKET, Key=key, Body=f"text,label\nmessage {i},ham\nwin now {i},spam\n".encode())
            began = time.perf_counter()
            outcome = catalog.accept_upload(key)
            seconds.append(time.perf_counter() - began)
            assert outcome.status == "accepted", outcome
        head = catalog.head()
        assert head is not None
        began = time.perf_counter()
        catalog.write_manifests(head)  # what the upload trigger does once per SQS batch
        manifests_seconds = time.perf_counter() - began
        manifest = s3.head_object(Bucket=BUCKET, Key=f"{VERSIONS}{head.version}/manifest.json")["ContentLength"]
        largest_item = max(len(json.dumps(item)) for item in dynamodb.scan(TableName=TABLE)["Items"])
    return {
        "accept_ms_median": round(1000 * statistics.median(seconds), 1),
        "accept_ms_max": round(1000 * max(seconds), 1),
        "manifests_per_batch_ms": round(1000 * manifests_seconds, 1),
        "largest_dynamodb_item_bytes": largest_item,
        "manifest_bytes": manifest,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dataset_versions.json"))
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION=REGION)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    result: dict[str, object] = {
        "machine": machine(),
        "command": "python benchmarks/bench_dataset_versions.py " + " ".join(sys.argv[1:]),
        "uploads_timed": args.uploads,
    }
    for parts in (10, 10_000):
        result[f"{parts}_parts"] = measure(parts, args.uploads)
        print(json.dumps({parts: result[f"{parts}_parts"]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
