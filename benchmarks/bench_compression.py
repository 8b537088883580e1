"""Bag table pruning side by side, in one run: what ships, how fast it answers, what it costs.

    .venv/bin/python benchmarks/bench_compression.py [--out benchmarks/results/compression.json]

Every variant trains the default bag model with the same seed on sms-spam train.csv (its eval
split, hashed from train.csv, is what ``prune_rows=auto`` chooses on), so the trained weights
are identical and only what ships differs. Each is then scored on test.csv, which no variant
saw. "before" is the model as shipped before pruning: the whole 262,145-row table, every
operator dynamically quantized (the int8 classifier takes its input's scale from each batch).

Columns: files a Lambda downloads (int8 model + featurizer files), table rows shipped, batch-1
p50 and p99 of featurize + onnxruntime on one thread, test accuracy and spam F1, and the largest
score difference for a text scored alone and inside a batch of 64 (batch invariance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SMS, latency_us, machine  # noqa: E402

VARIANTS = ("before", "trained", "0.25", "auto")


def build(variant: str, workdir: Path) -> tuple[Path, dict[str, Any], float]:
    import torch

    import training.families.bag as bag
    from skiff.data.dataset import read_csv, split_dataset
    from skiff.model.hyperparameters import Hyperparameters
    from training.export import QuantizationSettings
    from training.pipeline import TrainingData, build_artifact

    hp = Hyperparameters(prune_rows="trained" if variant == "before" else variant)
    train, held_out = split_dataset(read_csv(SMS / "train.csv"), hp.eval_fraction)
    prepare = bag.prepare
    if variant == "before":
        # The pipeline no longer ships an unpruned table; rebuild one here for the comparison.
        bag.prepare = lambda *a: dataclasses.replace(prepare(*a), compress=None, quantization=QuantizationSettings())
    try:
        began = time.perf_counter()
        model_dir = workdir / variant
        data = TrainingData(train, held_out, "hashed-split")
        metrics = build_artifact(data, hp, model_dir, device=torch.device("cpu"))
        return model_dir, metrics, time.perf_counter() - began
    finally:
        bag.prepare = prepare


def measure(model_dir: Path, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import f1_score

    from skiff.data.dataset import read_csv
    from skiff.model.artifact import MODEL_INT8
    from skiff.model.predictor import MAX_BATCH_TEXTS, Predictor

    test = read_csv(SMS / "test.csv")
    predictor = Predictor.from_directory(model_dir, threads=1)
    predicted = [p.label for p in predictor.predict(test.texts)]
    texts = iter(test.texts * 3)
    latency = latency_us(lambda: predictor.probabilities([next(texts)]), repeats=1000)
    batch = test.texts[:MAX_BATCH_TEXTS]
    together = predictor.probabilities(batch)
    alone = np.concatenate([predictor.probabilities([t]) for t in batch])
    compression = metrics.get("compression") or {}
    served = metrics["sizes"].get("served", metrics["sizes"][MODEL_INT8])
    return {
        "served_mb": served / 1e6,
        "table_rows": compression.get("kept_rows", metrics["hyperparameters_buckets"] + 1),
        "trained_rows": compression.get("trained_rows"),
        "batch1_p50_us": latency["p50"],
        "batch1_p99_us": latency["p99"],
        "test_accuracy": float(np.mean([p == y for p, y in zip(predicted, test.labels, strict=True)])),
        "test_spam_f1": float(f1_score(test.labels, predicted, pos_label="spam")),
        "held_out_accuracy": metrics["eval"]["int8"]["accuracy"],
        "unpruned_held_out_accuracy": compression.get("unpruned_validation_accuracy"),
        "alone_vs_batch64_max_difference": float(np.abs(together - alone).max()),
        "alone_vs_batch64_label_changes": int((together.argmax(1) != alone.argmax(1)).sum()),
        "build_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compression.json")
    args = parser.parse_args()
    from skiff.model.hyperparameters import Hyperparameters

    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            model_dir, metrics, seconds = build(variant, Path(tmp))
            rows[variant] = measure(
                model_dir, {**metrics, "hyperparameters_buckets": Hyperparameters().buckets}, seconds
            )
            print(f"{variant}: {json.dumps(rows[variant])}", flush=True)
    header = (
        f"{'variant':<9}{'served MB':>10}{'rows':>9}{'p50 µs':>8}{'p99 µs':>8}"
        f"{'test acc':>10}{'spam F1':>9}{'alone≠batch':>13}"
    )
    print(f"\n{machine()}\n{header}")
    for variant, row in rows.items():
        print(
            f"{variant:<9}{row['served_mb']:>10.2f}{row['table_rows']:>9,}{row['batch1_p50_us']:>8.0f}"
            f"{row['batch1_p99_us']:>8.0f}{row['test_accuracy']:>10.4f}{row['test_spam_f1']:>9.4f}"
            f"{row['alone_vs_batch64_max_difference']:>13.1e}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "variants": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
