"""Serving benchmark: the inference Lambda handler against moto, side by side with torch serving.

    .venv/bin/python benchmarks/bench_serving.py [--out benchmarks/results/serving.json]

1. Trains the default model on sms-spam through the SageMaker container contract.
2. Starts a moto server, publishes the artifact to S3, registers and promotes it; the
   torch checkpoint goes to S3 too, so both contenders fetch their model the same way.
3. Cold start: a fresh process handles its first API Gateway event (handler) / loads torch,
   fetches the checkpoint and answers (torch), with peak RSS read inside each child. The
   handler runs twice: from this checkout's venv, and as Lambda runs it (the built x86_64
   layer and function with their bytecode, the runtime's boto3, Python 3.12: LambdaPackages).
4. Warm latency of the handler, in process: p50/p99 for 1 short text and for 32 texts.
5. Lambda bundle sizes for x86_64 and arm64.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, LambdaPackages, fresh_process, machine  # noqa: E402

EVENT = ROOT.parent / "shared" / "events" / "apigw-http-v2-post.json"
SHORT_TEXT = "Free entry in a weekly competition to win FA Cup final tickets, text FA to 87121"

HANDLER_CHILD = """
import json, sys, time
began = time.perf_counter()
from functions.inference.handler import lambda_handler

class Context:
    function_name = "skiff-inference"; memory_limit_in_mb = 1024; aws_request_id = "bench"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:skiff-inference"

def event(body):
    e = json.load(open(sys.argv[1]))
    e["rawPath"] = e["requestContext"]["http"]["path"] = "/predict"
    e["headers"]["content-type"] = "application/json"
    e["body"] = json.dumps(body)
    return e

first = lambda_handler(event({"text": sys.argv[2]}), Context())
assert first["statusCode"] == 200, first
answered, cold = time.time(), time.perf_counter() - began
assert "torch" not in sys.modules
import statistics, io, contextlib
def timed(body, repeats):
    e = event(body); samples = []
    for i in range(repeats + 20):
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF metrics line per call
            t = time.perf_counter_ns(); r = lambda_handler(e, Context()); d = (time.perf_counter_ns() - t) / 1000
        assert r["statusCode"] == 200
        if i >= 20: samples.append(d)
    samples.sort()
    return {"p50": statistics.median(samples), "p99": samples[int(len(samples) * 0.99) - 1]}
texts = json.load(open(sys.argv[3]))
warm = {"1_text": timed({"text": sys.argv[2]}, 1000), "32_texts": timed({"texts": texts}, 300)}
print(answered, cold, PEAK_RSS_KIB(), json.dumps(warm).replace(" ", ""))
"""

TORCH_CHILD = """
import json, sys, time
began = time.perf_counter()
import boto3, torch
from training.families.bag import BagOfNgrams, WithProbabilities
from skiff.model.features import featurizer_from_spec
s3 = boto3.client("s3")
s3.download_file(sys.argv[1], "torch/model.pt", "/tmp/skiff-bench-model.pt")
spec = json.loads(s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2] + "preprocessing.json")["Body"].read())
# The checkpoint holds the whole trained table: hash without the pruned artifact's remap (the
# spec's version and hash stay: version 1 would mean plain normalization and BLAKE2b).
spec = {k: v for k, v in spec.items() if k != "kept_buckets_file"}
state = torch.load("/tmp/skiff-bench-model.pt", map_location="cpu", weights_only=False)
hp = state["identity"]["hyperparameters"]
model = BagOfNgrams(hp["buckets"], hp["embedding_dim"], len(state["identity"]["labels"]), head=hp["bag_head"])
model.load_state_dict(state["model"])
served = WithProbabilities(model).eval()
with torch.no_grad():
    scores = served(torch.from_numpy(featurizer_from_spec(spec).encode([sys.argv[3]])["token_ids"]))
print(time.time(), time.perf_counter() - began, PEAK_RSS_KIB())
"""


def _weights_only(checkpoint: Path, target: Path) -> Path:
    """What torch serving would ship: the model's weights, not the optimizer state."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.save({"model": state["model"], "identity": state["identity"]}, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import os

    import boto3

    from skiff.data.dataset import read_csv
    from skiff.local.container import run_training_container
    from skiff.local.moto_server import MotoServer
    from skiff.model.hyperparameters import Hyperparameters
    from skiff.packaging.bundle import build_all
    from skiff.registry.artifacts import ArtifactStore
    from skiff.registry.table import Registry, create_table, metrics_summary, new_version_id

    work = Path(tempfile.mkdtemp(prefix="skiff-bench-serving-"))
    run = run_training_container(
        work / "job", {"train": SMS / "train.csv", "test": SMS / "test.csv"}, Hyperparameters()
    )
    assert run.succeeded, run.failure_reason
    weights = _weights_only(sorted((work / "job" / "checkpoints").glob("*.pt"))[-1], work / "model.pt")
    texts32 = work / "texts32.json"
    texts32.write_text(json.dumps(read_csv(SMS / "test.csv").texts[:32]))

    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "SKIFF_REGISTRY_TABLE": "skiff-registry",
        "SKIFF_ARTIFACTS_BUCKET": "skiff-artifacts",
        "POWERTOOLS_METRICS_NAMESPACE": "Skiff",
    }
    os.environ.update(env)
    with MotoServer() as moto:
        os.environ["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"] = moto.endpoint_url
        create_table(env["SKIFF_REGISTRY_TABLE"])
        s3 = boto3.client("s3")
        s3.create_bucket(
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
        s3.upload_file(str(weights), env["SKIFF_ARTIFACTS_BUCKET"], "torch/model.pt")

        print("building the Lambda packages…", flush=True)
        packages = LambdaPackages.build(work / "lambda")
        handler_runs, torch_runs, lambda_runs = [], [], []
        for i in range(args.runs):
            cache = work / f"cache-{i}"  # an empty /tmp, as in a new container
            spawned, (answered, inner, peak, warm) = fresh_process(
                HANDLER_CHILD, str(EVENT), SHORT_TEXT, str(texts32), env={**env, "SKIFF_MODEL_CACHE_DIR": str(cache)}
            )
            handler_runs.append((float(answered) - spawned, float(inner), int(peak) / 1024, json.loads(warm)))
            spawned, (answered, inner, peak) = fresh_process(
                TORCH_CHILD, env["SKIFF_ARTIFACTS_BUCKET"], f"models/{version}/", SHORT_TEXT, env=env
            )
            torch_runs.append((float(answered) - spawned, float(inner), int(peak) / 1024))
            spawned, (answered, inner, peak, warm) = fresh_process(
                HANDLER_CHILD,
                str(EVENT),
                SHORT_TEXT,
                str(texts32),
                env={**env, "SKIFF_MODEL_CACHE_DIR": str(work / f"lambda-cache-{i}")},
                packages=packages,
            )
            lambda_runs.append((float(answered) - spawned, float(inner), int(peak) / 1024, json.loads(warm)))

    def summary(runs: list) -> dict[str, float]:
        return {
            "wall_seconds_median": statistics.median(r[0] for r in runs),
            "in_process_seconds_median": statistics.median(r[1] for r in runs),
            "peak_rss_mib_max": max(r[2] for r in runs),
        }

    bundles = {}
    for architecture in ("x86_64", "arm64"):
        report = build_all(work / "bundles", architecture)
        inference = report.functions["inference"]
        bundles[architecture] = {
            "layer_unzipped_mb": report.layer.unzipped_bytes / 1e6,
            "layer_zipped_mb": report.layer.zipped_bytes / 1e6,
            "inference_function_unzipped_kb": inference.unzipped_bytes / 1e3,
            "inference_total_unzipped_mb": (report.layer.unzipped_bytes + inference.unzipped_bytes) / 1e6,
            "inference_total_zipped_mb": (report.layer.zipped_bytes + inference.zipped_bytes) / 1e6,
        }

    cold = {
        "handler_onnx_int8": summary(handler_runs),
        "torch": summary(torch_runs),
        "handler_lambda_packages": {**summary(lambda_runs), "python": packages.python},
    }
    result = {
        "machine": machine(),
        "command": "python benchmarks/bench_serving.py",
        "cold_start": cold,
        "ratios": {
            "cold_start_handler_over_torch": cold["handler_onnx_int8"]["wall_seconds_median"]
            / cold["torch"]["wall_seconds_median"],
            "peak_rss_handler_over_torch": cold["handler_onnx_int8"]["peak_rss_mib_max"]
            / cold["torch"]["peak_rss_mib_max"],
            "cold_start_lambda_packages_over_torch": cold["handler_lambda_packages"]["wall_seconds_median"]
            / cold["torch"]["wall_seconds_median"],
        },
        "warm_handler_latency_us": handler_runs[0][3],
        "warm_handler_latency_us_lambda_packages": lambda_runs[0][3],
        "bundles": bundles,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
