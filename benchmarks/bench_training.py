"""Foundation benchmark on the real sms-spam dev set, everything side by side in one run.

    .venv/bin/python benchmarks/bench_training.py [--out benchmarks/results/training.json]

Measures: training seconds and samples/s; fp32 vs int8 file size; accuracy and spam F1 of
fp32 vs int8 on test.csv; batch-1 and batch-32 latency of torch eager vs ONNX fp32 vs ONNX
int8 (1 thread, featurized inputs, plus int8 including featurization); cold start (fresh
process -> first prediction) and peak RSS of torch serving vs ONNX int8 serving.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, fresh_process, latency_us, machine  # noqa: E402

SHORT_TEXT = "Free entry in a weekly competition to win FA Cup final tickets, text FA to 87121"

TORCH_SERVE = """
import sys, time, json
began = time.perf_counter()
import torch
from training.families.bag import BagOfNgrams, WithProbabilities
from skiff.model.features import featurizer_from_spec
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
spec = json.load(open(sys.argv[2]))
hp = state["identity"]["hyperparameters"]
model = BagOfNgrams(hp["buckets"], hp["embedding_dim"], len(state["identity"]["labels"]), head=hp["bag_head"])
model.load_state_dict(state["model"])
served = WithProbabilities(model).eval()
ids = featurizer_from_spec(spec).encode([sys.argv[3]])["token_ids"]
with torch.no_grad():
    served(torch.from_numpy(ids))
print(time.time(), time.perf_counter() - began, PEAK_RSS_KIB())
"""

ONNX_SERVE = """
import sys, time
began = time.perf_counter()
from skiff.model.predictor import Predictor
Predictor.from_directory(sys.argv[1], threads=1).predict([sys.argv[2]])
assert "torch" not in sys.modules
print(time.time(), time.perf_counter() - began, PEAK_RSS_KIB())
"""


def cold_run(code: str, *args: str) -> tuple[float, float, float]:
    """(wall seconds from spawn to first answer, in-process seconds, peak RSS MiB)."""
    spawned, (answered, inner, peak_kib) = fresh_process(code, *args)
    return float(answered) - spawned, float(inner), int(peak_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training.json"))
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    from skiff.data.dataset import read_csv
    from skiff.model.features import featurizer_from_spec
    from skiff.model.hyperparameters import Hyperparameters
    from skiff.model.predictor import Predictor, session_options
    from training.families.bag import WithProbabilities
    from training.pipeline import TrainingData, build_artifact

    work = Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    model_dir, checkpoints = work / "model", work / "checkpoints"
    hp = Hyperparameters()
    data = TrainingData(read_csv(SMS / "train.csv"), read_csv(SMS / "test.csv"), "test-channel")
    began = time.perf_counter()
    metrics = build_artifact(data, hp, model_dir, checkpoint_dir=checkpoints, device=torch.device("cpu"))
    pipeline_seconds = time.perf_counter() - began

    checkpoint = sorted(checkpoints.glob("*.pt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    from training.families.bag import BagOfNgrams

    model = BagOfNgrams(hp.buckets, hp.embedding_dim, 2, head=hp.bag_head)
    model.load_state_dict(state["model"])
    eager = WithProbabilities(model).eval()

    featurizer = featurizer_from_spec(json.loads((model_dir / "preprocessing.json").read_text()))
    test_texts = data.evaluation.texts
    batches = {"batch1": [SHORT_TEXT], "batch32": test_texts[:32]}
    torch.set_num_threads(1)
    sessions = {
        name: ort.InferenceSession(str(model_dir / f"model.{name}.onnx"), sess_options=session_options(1))
        for name in ("fp32", "int8")
    }
    predictor = Predictor.from_directory(model_dir, threads=1)
    latency: dict[str, dict[str, dict[str, float]]] = {}
    for batch_name, texts in batches.items():
        inputs = featurizer.encode(texts)
        tensor = torch.from_numpy(inputs["token_ids"])
        row: dict[str, dict[str, float]] = {}
        with torch.inference_mode():
            row["torch_eager"] = latency_us(lambda x=tensor: eager(x), args.repeats)
        for name, session in sessions.items():
            row[f"onnx_{name}"] = latency_us(lambda s=session, x=inputs: s.run(None, x), args.repeats)
        row["onnx_int8_with_featurize"] = latency_us(lambda t=texts: predictor.predict(t), args.repeats)
        latency[batch_name] = row

    cold = {}
    for name, code, extra in (
        ("torch", TORCH_SERVE, (str(checkpoint), str(model_dir / "preprocessing.json"), SHORT_TEXT)),
        ("onnx_int8", ONNX_SERVE, (str(model_dir), SHORT_TEXT)),
    ):
        runs = [cold_run(code, *extra) for _ in range(3)]
        cold[name] = {
            "wall_seconds_median": statistics.median(r[0] for r in runs),
            "in_process_seconds_median": statistics.median(r[1] for r in runs),
            "peak_rss_mib_max": max(r[2] for r in runs),
        }

    evaluation = metrics["eval"]
    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "command": "python benchmarks/bench_training.py",
        "training": {
            "train_seconds": metrics["training"]["seconds"],
            "featurize_seconds": metrics["training"]["featurize_seconds"],
            "samples_per_second": metrics["training"]["samples_per_second"],
            "pipeline_seconds_incl_export_quantize_parity": pipeline_seconds,
            "epochs": hp.epochs,
        },
        "quality": {
            precision: {
                "accuracy": evaluation[precision]["accuracy"],
                "spam_f1": evaluation[precision]["per_class"]["spam"]["f1"],
                "macro_f1": evaluation[precision]["macro_f1"],
            }
            for precision in ("fp32", "int8")
        },
        "parity": metrics["parity"],
        "sizes": metrics["sizes"],
        "latency_us_1_thread": latency,
        "cold_start": cold,
        "ratios": {
            "cold_start_onnx_over_torch": cold["onnx_int8"]["wall_seconds_median"]
            / cold["torch"]["wall_seconds_median"],
            "peak_rss_onnx_over_torch": cold["onnx_int8"]["peak_rss_mib_max"] / cold["torch"]["peak_rss_mib_max"],
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
