"""Transformer graph: the dynamo export as it was (scaled-dot-product attention), the same with
eager attention, and the traced eager graph with onnxruntime's fused attention (shipped), all
static int8, side by side from one trained checkpoint.

    .venv/bin/python benchmarks/bench_attention_fusion.py --job JOB_DIR [--rounds 11] [--repeats 300]
        [--out benchmarks/results/attention_fusion.json]

JOB_DIR is what a transformer job left (``training/train.py ... --model-dir JOB/model
--checkpoint-dir JOB/checkpoints``, or a ``bench_transformer_pruning.py`` job directory): its
last checkpoint's weights and its model's temperature are exported each way, quantized with
the family's settings from the same 256 training texts, and every test.csv text is scored at
batch 1 and batch 64. Latency: one short text on one onnxruntime thread, the graphs in
alternating rounds (a machine whose speed drifts moves them alike); the figure to read is the
median of the round p50s, beside the lowest and highest round.
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

from benchmarks.bench_transformer_pruning import SHORT_TEXT  # noqa: E402
from benchmarks.common import ROOT, SMS, latency_us, machine  # noqa: E402


def main() -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from skiff.data.dataset import read_csv
    from skiff.model.features import featurizer_from_spec
    from skiff.model.predictor import OUTPUT_NAME, session_options
    from training.export import DYNAMO, TORCHSCRIPT, export_onnx, fuse_attention, onnx_probabilities, quantize_int8
    from training.families.transformer import (
        QUANTIZATION,
        TransformerClassifier,
        TransformerWithProbabilities,
        load_encoder,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attention_fusion.json"))
    args = parser.parse_args()

    model_dir = args.job / "model"
    checkpoint = sorted((args.job / "checkpoints").glob("checkpoint-epoch-*.pt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hp = state["identity"]["hyperparameters"]
    if hp["encoder_layers"] or hp["vocabulary_min_count"]:
        raise SystemExit(f"expected a whole-encoder job (got: {checkpoint} with cuts)")
    weights = state["best"]["model"] or state["model"]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    featurizer = featurizer_from_spec(json.loads((model_dir / "preprocessing.json").read_text()), model_dir)
    labels = json.loads((model_dir / "labels.json").read_text())
    test = read_csv(SMS / "test.csv")
    y = np.array([labels.index(label) for label in test.labels])
    calibration_texts = read_csv(SMS / "train.csv").texts[: QUANTIZATION.calibration_texts]
    config = json.loads((Path(hp["base_model"]) / "config.json").read_text())

    def exportable(attention: str) -> torch.nn.Module:
        classifier = TransformerClassifier(load_encoder(Path(hp["base_model"]))[0], len(labels))
        classifier.load_state_dict(weights)
        model = TransformerWithProbabilities(classifier).eval()  # switches the encoder to eager attention
        classifier.encoder.set_attn_implementation(attention)
        model.probabilities.set_temperature(metrics["calibration"]["temperature"])
        return model

    work = Path(tempfile.mkdtemp(prefix="bench-attention-fusion-"))
    example = featurizer.encode(calibration_texts[:2])
    # name: (transformers' attention implementation, exporter, onnxruntime's fusion before quantizing)
    variants = {
        "dynamo, sdpa attention (before)": ("sdpa", DYNAMO, False),
        "dynamo, eager attention": ("eager", DYNAMO, False),
        "traced, eager, fused (shipped)": ("eager", TORCHSCRIPT, True),
    }
    results: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    for index, (name, (attention, exporter, fuse)) in enumerate(variants.items()):
        fp32, int8 = work / f"{index}.fp32.onnx", work / f"{index}.int8.onnx"
        began = time.perf_counter()
        export_onnx(exportable(attention), fp32, example, exporter)
        fused = (
            fuse_attention(fp32, num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"])
            if fuse
            else {}
        )
        export_seconds = time.perf_counter() - began
        quantize_int8(fp32, int8, QUANTIZATION, (featurizer.encode([t]) for t in calibration_texts))
        scores = {batch: onnx_probabilities(int8, featurizer, test.texts, batch_size=batch) for batch in (1, 64)}
        fp32_scores = onnx_probabilities(fp32, featurizer, test.texts, batch_size=64)
        results[name] = {
            "exporter": exporter,
            "fused_operators": fused,
            "operators": len(onnx.load(str(int8)).graph.node),
            "export_and_fuse_seconds": round(export_seconds, 1),
            "fp32_accuracy": float(np.mean(fp32_scores.argmax(1) == y)),
            "int8_accuracy_batch_1": float(np.mean(scores[1].argmax(1) == y)),
            "int8_accuracy_batch_64": float(np.mean(scores[64].argmax(1) == y)),
            "int8_batch_max_score_difference": float(np.abs(scores[1] - scores[64]).max()),
            "int8_errors": np.flatnonzero(scores[64].argmax(1) != y).tolist(),
            "int8_bytes": int8.stat().st_size,
            "_fp32_scores": fp32_scores,
            "_int8_scores": scores[64],
        }
        paths[name] = int8
        print(f"{name}: exported, int8 {results[name]['int8_accuracy_batch_64']:.2%}", flush=True)

    before, *_, after = (results[name] for name in variants)
    comparison = {
        "fp32_max_score_difference": float(np.abs(before["_fp32_scores"] - after["_fp32_scores"]).max()),
        "int8_label_agreement": float(np.mean(before["_int8_scores"].argmax(1) == after["_int8_scores"].argmax(1))),
    }
    for result in results.values():
        del result["_fp32_scores"], result["_int8_scores"]

    sessions = {
        name: ort.InferenceSession(str(p), session_options(1), providers=["CPUExecutionProvider"])
        for name, p in paths.items()
    }
    short = featurizer.encode([SHORT_TEXT])
    rounds: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for index in range(args.rounds):
        for name in order[index % len(order) :] + order[: index % len(order)]:
            session = sessions[name]
            rounds[name].append(latency_us(lambda s=session: s.run([OUTPUT_NAME], short), args.repeats)["p50"])
        print(f"round {index + 1}: " + ", ".join(f"{n} {rounds[n][-1] / 1000:.2f} ms" for n in order), flush=True)
    for name, measured in rounds.items():
        results[name]["model_p50_ms"] = {
            "median": statistics.median(measured) / 1000,
            "min": min(measured) / 1000,
            "max": max(measured) / 1000,
        }

    print(f"\n{'graph':34} {'ops':>4} {'int8 b1 / b64':>16} {'b1-b64 max':>10} {'MB':>6}  model p50: median (min-max)")
    for name, r in results.items():
        p = r["model_p50_ms"]
        print(
            f"{name:34} {r['operators']:4d} {r['int8_accuracy_batch_1']:7.2%} /{r['int8_accuracy_batch_64']:7.2%} "
            f"{r['int8_batch_max_score_difference']:10.1e} {r['int8_bytes'] / 1e6:6.2f}  "
            f"{p['median']:.2f} ms ({p['min']:.2f}-{p['max']:.2f})"
        )
    print(
        f"fp32 scores, before vs after: max difference {comparison['fp32_max_score_difference']:.1e}; "
        f"int8 labels agree on {comparison['int8_label_agreement']:.2%} of test.csv"
    )
    record = {
        "machine": machine(),
        "job": str(args.job),
        "checkpoint": checkpoint.name,
        "text": SHORT_TEXT,
        "threads": 1,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "variants": results,
        "comparison": comparison,
        "per_round_p50_us": rounds,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
