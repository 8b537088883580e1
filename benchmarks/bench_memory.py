"""Lambda memory sizing for the inference function: peak memory and latency per request size,
and what each memory setting would cost per million requests.

    .venv/bin/python benchmarks/bench_memory.py [--out benchmarks/results/memory.json]

1. Trains the default bag model on sms-spam train.csv (the SageMaker container contract), and
   serves it from a moto server as the stack does (registry, artifacts bucket).
2. For each request size (1, 8, 32, 64 texts of test.csv): a fresh process loads the inference
   handler, answers one request (cold), then 300 more (warm), on one onnxruntime thread; its
   peak RSS (VmHWM) and warm p50/p99 are measured.
3. For each Lambda memory setting: whether the peak fits with 2x headroom, and a *modeled*
   p50 and cost per million requests. Lambda gives a function CPU in proportion to its memory
   (one full vCPU at 1,769 MB), so a single-threaded handler measured on a full core here is
   modeled as ``p50 x max(1, 1769 / MB)``; billing rounds each invocation up to 1 ms. Prices:
   us-east-1, arm64 $0.0000133334 per GB-second, x86_64 $0.0000166667, $0.20 per million
   requests. The model needs checking on a real Lambda (it has not been, here).

Memory also sets what SnapStart's cached snapshots cost while the stack idles: $0.0000015046
per GB-second for each kept published version (production and its rollback target), about
$3.90 per GB a month each. The recommendation is the setting with 2x headroom whose month
costs least at ``--requests-per-month`` one-text requests (default one million), snapshots
included, ties going to the faster setting.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_serving import EVENT  # noqa: E402
from benchmarks.common import ROOT, SMS, fresh_process, machine  # noqa: E402

SIZES = (1, 8, 32, 64)
MEMORY_MB = (256, 512, 768, 1024, 1536, 1769, 2048)
FULL_VCPU_MB = 1769
PRICE_PER_GB_SECOND = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
PRICE_PER_MILLION_REQUESTS = 0.20
SNAPSTART_CACHE_PER_GB_SECOND = 0.0000015046
KEPT_VERSIONS = 2  # production and the rollback target (skiff.serve.lambda_alias)
SECONDS_PER_MONTH = 30 * 24 * 3600
HEADROOM = 2.0

CHILD = """
import contextlib, io, json, statistics, sys, time
from functions.inference.handler import lambda_handler

class Context:
    function_name = "skiff-inference"; memory_limit_in_mb = 1024; aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:skiff-inference"

texts = json.load(open(sys.argv[2]))
e = json.load(open(sys.argv[1]))
e["rawPath"] = e["requestContext"]["http"]["path"] = "/predict"
e["headers"]["content-type"] = "application/json"
e["body"] = json.dumps({"texts": texts})
with contextlib.redirect_stdout(io.StringIO()):  # the EMF metrics lines
    assert lambda_handler(e, Context())["statusCode"] == 200
    samples = []
    for _ in range(300):
        t = time.perf_counter_ns(); r = lambda_handler(e, Context()); samples.append((time.perf_counter_ns() - t) / 1e6)
        assert r["statusCode"] == 200
samples.sort()
print(PEAK_RSS_KIB(), statistics.median(samples), samples[int(len(samples) * 0.99) - 1])
"""


def sizing(measured: dict[int, dict[str, float]], requests_per_month: float) -> list[dict[str, Any]]:
    peak = max(m["peak_rss_mib"] for m in measured.values())
    rows = []
    for memory in MEMORY_MB:
        slowdown = max(1.0, FULL_VCPU_MB / memory)
        snapshots = KEPT_VERSIONS * memory / 1024 * SECONDS_PER_MONTH * SNAPSTART_CACHE_PER_GB_SECOND
        row: dict[str, Any] = {
            "memory_mb": memory,
            "fits_with_headroom": peak * HEADROOM <= memory,
            "snapstart_usd_per_month": snapshots,
        }
        for size, m in measured.items():
            p50 = m["p50_ms"] * slowdown
            billed_gb_seconds = math.ceil(p50) / 1000 * memory / 1024
            row[f"{size}_texts"] = {
                "modeled_p50_ms": p50,
                **{
                    f"usd_per_million_{arch}": PRICE_PER_MILLION_REQUESTS + 1e6 * billed_gb_seconds * price
                    for arch, price in PRICE_PER_GB_SECOND.items()
                },
            }
        row["usd_per_month_arm64"] = snapshots + requests_per_month / 1e6 * row["1_texts"]["usd_per_million_arm64"]
        rows.append(row)
    return rows


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any]:
    fitting = [r for r in rows if r["fits_with_headroom"]]
    return min(fitting, key=lambda r: (round(r["usd_per_month_arm64"], 4), r["1_texts"]["modeled_p50_ms"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory.json"))
    parser.add_argument("--requests-per-month", type=float, default=1e6)
    args = parser.parse_args()

    import boto3

    from skiff.data.dataset import read_csv
    from skiff.local.container import run_training_container
    from skiff.local.moto_server import MotoServer
    from skiff.model.hyperparameters import Hyperparameters
    from skiff.registry.artifacts import ArtifactStore
    from skiff.registry.table import Registry, create_table, metrics_summary, new_version_id

    work = Path(tempfile.mkdtemp(prefix="skiff-bench-memory-"))
    run = run_training_container(work / "job", {"train": SMS / "train.csv"}, Hyperparameters())
    assert run.succeeded, run.failure_reason
    texts = read_csv(SMS / "test.csv").texts
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "SKIFF_REGISTRY_TABLE": "skiff-registry",
        "SKIFF_ARTIFACTS_BUCKET": "skiff-artifacts",
        "SKIFF_ORT_THREADS": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "Skiff",
    }
    os.environ.update(env)
    measured: dict[int, dict[str, float]] = {}
    with MotoServer() as moto:
        os.environ["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"] = moto.endpoint_url
        create_table(env["SKIFF_REGISTRY_TABLE"])
        boto3.client("s3").create_bucket(
            Bucket=env["SKIFF_ARTIFACTS_BUCKET"], CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        version = new_version_id()
        published = ArtifactStore(env["SKIFF_ARTIFACTS_BUCKET"]).publish(run.model_dir, version)
        registry = Registry(env["SKIFF_REGISTRY_TABLE"])
        registry.register(
            version=version,
            artifact_uri=published.uri,
            manifest_sha256=published.manifest_sha256,
            metrics=metrics_summary(json.loads((run.model_dir / "metrics.json").read_text())),
            lineage={},
        )
        registry.promote(version, "benchmark")
        for size in SIZES:
            batch = work / f"texts-{size}.json"
            batch.write_text(json.dumps(texts[:size]))
            _, (peak_kib, p50, p99) = fresh_process(
                CHILD, str(EVENT), str(batch), env={**env, "SKIFF_MODEL_CACHE_DIR": str(work / f"cache-{size}")}
            )
            measured[size] = {"peak_rss_mib": int(peak_kib) / 1024, "p50_ms": float(p50), "p99_ms": float(p99)}

    rows = sizing(measured, args.requests_per_month)
    best = recommend(rows)
    print(f"{'texts':>5} {'peak RSS':>9} {'p50 (full core)':>16} {'p99':>8}")
    for size, m in measured.items():
        print(f"{size:>5} {m['peak_rss_mib']:>7.0f} MiB {m['p50_ms']:>13.2f} ms {m['p99_ms']:>6.2f} ms")
    header = " ".join(f"{f'{s} text(s): p50 / $ per M arm64':>34}" for s in SIZES)
    print(f"\n{'memory':>7} {'fits 2x':>7} {'snapshots/mo':>12} {'month':>8} {header}")
    for row in rows:
        cells = " ".join(
            f"{row[f'{s}_texts']['modeled_p50_ms']:>17.2f} ms / ${row[f'{s}_texts']['usd_per_million_arm64']:.4f}"
            for s in SIZES
        )
        print(
            f"{row['memory_mb']:>5}MB {str(row['fits_with_headroom']):>7} ${row['snapstart_usd_per_month']:>11.2f} "
            f"${row['usd_per_month_arm64']:>7.2f} {cells}"
        )
    print(f"\nrecommended: {best['memory_mb']} MB")
    record = {
        "machine": machine(),
        "command": "python benchmarks/bench_memory.py",
        "measured_per_request_size": measured,
        "sizing": rows,
        "requests_per_month": args.requests_per_month,
        "recommended_memory_mb": best["memory_mb"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
