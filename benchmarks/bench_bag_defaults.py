"""How the bag family's defaults were chosen: 5-fold cross-validation on sms-spam train.csv only.

    .venv/bin/python benchmarks/bench_bag_defaults.py [--grid defaults|weighting]
        [--out benchmarks/results/bag_defaults.json]

For each head, learning rate and character n-gram range, one run per fold trains for the
largest epoch count and records the fold's held-out accuracy after every epoch, so every
epoch count of the grid is read off the same runs. The test set is never read here; the
chosen defaults are then measured on it by bench_quality.py, beside the scikit-learn peers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SMS, machine  # noqa: E402

FOLDS = 5
EPOCHS = (5, 10, 20)
GRIDS: dict[str, dict[str, dict[str, list[Any]]]] = {
    # How the head, step and n-grams were chosen.
    "defaults": {
        "linear": {"learning_rate": [3.0, 10.0, 30.0, 100.0, 300.0, 1000.0], "char_ngrams": ["3-4", "2-5"]},
        "embedding": {"learning_rate": [0.02], "char_ngrams": ["3-4", "2-5"]},
    },
    # Whether weighing spam's rows up (13 % of sms-spam) helps the chosen head, at its step and the next.
    "weighting": {
        "linear": {"learning_rate": [30.0, 100.0], "char_ngrams": ["2-5"], "class_weighting": ["none", "balanced"]},
    },
}


def fold_accuracies(texts: list[str], labels: list[str], overrides: dict[str, Any]) -> list[list[float]]:
    """Per fold, the held-out accuracy after each epoch up to max(EPOCHS)."""
    import torch
    from sklearn.model_selection import StratifiedKFold

    from skiff.model.hyperparameters import Hyperparameters
    from training.families import LabelledTexts
    from training.families.bag import prepare
    from training.loop import fit

    names = sorted(set(labels))
    y = torch.as_tensor([names.index(label) for label in labels])
    # Every epoch of every fold is read, so early stopping is off (patience 0).
    hp = Hyperparameters(epochs=max(EPOCHS), early_stopping_patience=0, **overrides)
    runs = []
    for train, held_out in StratifiedKFold(FOLDS, shuffle=True, random_state=13).split(texts, labels):
        data = LabelledTexts([texts[i] for i in train], y[train], [texts[i] for i in held_out], y[held_out], names)
        family = prepare(data, hp, Path(tempfile.gettempdir()))  # writes only when pruning, not here
        epochs: list[float] = []
        fit(
            family.task,
            hp,
            names,
            dataset_fingerprint="cv",
            device=torch.device("cpu"),
            on_epoch_end=lambda record, out=epochs: out.append(record.validation_accuracy),
            keep_best=False,
        )
        runs.append(epochs)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", choices=sorted(GRIDS), default="defaults")
    parser.add_argument("--out", default=None, help="default: results/bag_defaults.json (bag_<grid>.json for others)")
    args = parser.parse_args()
    name = "bag_defaults.json" if args.grid == "defaults" else f"bag_{args.grid}.json"
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / name
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from skiff.data.dataset import read_csv

    train = read_csv(SMS / "train.csv")
    texts, labels = [e.text for e in train.examples], [e.label for e in train.examples]
    rows = []
    for head, grid in GRIDS[args.grid].items():
        for values in itertools.product(*grid.values()):
            setting = {"bag_head": head, **dict(zip(grid, values, strict=True))}
            began = time.perf_counter()
            runs = fold_accuracies(texts, labels, setting)
            seconds = time.perf_counter() - began
            for epochs in EPOCHS:
                scores = [run[epochs - 1] for run in runs]
                rows.append(
                    {
                        **setting,
                        "epochs": epochs,
                        "cv_accuracy": sum(scores) / len(scores),
                        "folds": scores,
                        "seconds_for_all_folds": seconds,
                    }
                )
                print(f"{setting} epochs {epochs:2d}: CV {rows[-1]['cv_accuracy']:.4%}", flush=True)
    best = max(rows, key=lambda r: r["cv_accuracy"])
    print("best:", {k: v for k, v in best.items() if k not in ("folds", "seconds_for_all_folds")})
    command = f"python benchmarks/bench_bag_defaults.py --grid {args.grid}"
    report = {"machine": machine(), "command": command, "rows": rows, "best": best}
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
