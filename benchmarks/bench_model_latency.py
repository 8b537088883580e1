"""Batch-1 latency of trained artifacts side by side, in alternating rounds, so that a machine
whose speed drifts within minutes moves every contender alike.

    .venv/bin/python benchmarks/bench_model_latency.py NAME=ARTIFACT_DIR [NAME=ARTIFACT_DIR ...]
        [--rounds 7] [--repeats 300] [--out benchmarks/results/model_latency.json]

Each round measures every artifact in turn (in a rotated order) on one onnxruntime thread:
the model alone on one short text (issue 15's column), and featurize + model. The figure to
read is the median over rounds of each round's p50, beside the lowest and highest round.
bench_transformer_pruning.py measures each variant once, right after training it; this
re-measures the artifacts it left (or any others) without training again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_transformer_pruning import SHORT_TEXT  # noqa: E402
from benchmarks.common import ROOT, latency_us, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", help="NAME=ARTIFACT_DIR")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "model_latency.json"))
    args = parser.parse_args()

    from skiff.model.artifact import MODEL_INT8
    from skiff.model.predictor import Predictor
    from training.export import OUTPUT_NAME

    named = dict(item.split("=", 1) for item in args.artifacts)
    predictors = {name: Predictor.from_directory(directory, MODEL_INT8, threads=1) for name, directory in named.items()}
    inputs = {name: p.featurizer.encode([SHORT_TEXT]) for name, p in predictors.items()}
    rounds: dict[str, dict[str, list[float]]] = {name: {"model": [], "featurize_and_model": []} for name in named}
    order = list(named)
    for index in range(args.rounds):
        for name in order[index % len(order) :] + order[: index % len(order)]:
            p, x = predictors[name], inputs[name]
            rounds[name]["model"].append(
                latency_us(lambda p=p, x=x: p.session.run([OUTPUT_NAME], x), args.repeats)["p50"]
            )
            rounds[name]["featurize_and_model"].append(
                latency_us(lambda p=p: p.predict([SHORT_TEXT]), args.repeats)["p50"]
            )
        print(f"round {index + 1}: " + ", ".join(f"{n} {rounds[n]['model'][-1] / 1000:.2f} ms" for n in order))

    summary = {
        name: {
            kind: {"median_ms": statistics.median(v) / 1000, "min_ms": min(v) / 1000, "max_ms": max(v) / 1000}
            for kind, v in measured.items()
        }
        for name, measured in rounds.items()
    }
    print(f"\n{'artifact':40} {'model p50: median (min-max) over rounds':42} featurize + model")
    for name, s in summary.items():
        m, f = s["model"], s["featurize_and_model"]
        print(
            f"{name:40} {m['median_ms']:.2f} ms ({m['min_ms']:.2f}-{m['max_ms']:.2f}){'':21} "
            f"{f['median_ms']:.2f} ms ({f['min_ms']:.2f}-{f['max_ms']:.2f})"
        )
    record = {
        "machine": machine(),
        "text": SHORT_TEXT,
        "threads": 1,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "artifacts": named,
        "per_round_p50_us": rounds,
        "summary": summary,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"recorded: {args.out}")


if __name__ == "__main__":
    main()
