"""Cold start of the inference function with and without bytecode in its packages, side by side.

    .venv/bin/python benchmarks/bench_bytecode.py [--repeats 7] [--out benchmarks/results/bytecode.json]

Builds the x86_64 layer and inference function twice (``skiff bundle`` with and without
``.pyc`` files compiled by Python 3.12, the functions' runtime), unpacks each as Lambda does
(/var/task, /opt/python, read-only: the runtime cannot write pycs, so ``-B`` here) beside a
pip-installed boto3 standing in for the runtime's own, then times fresh Python 3.12 processes,
alternating the two: spawn → handler module imported → first prediction from the default
sms-spam model. Medians of ``--repeats`` runs each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, LambdaPackages, machine  # noqa: E402

CHILD = """
import sys, time
import functions.inference.handler
imported = time.time()
from skiff.model.predictor import Predictor
label = Predictor.from_directory(sys.argv[1]).predict(["Free entry! text WIN to 80086"])[0].label
assert "torch" not in sys.modules
print(imported, time.time(), label)
"""


def main() -> None:
    from skiff.local.container import run_training_container
    from skiff.model.hyperparameters import Hyperparameters

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bytecode.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bytecode-"))
    print("training the default model on sms-spam…", flush=True)
    run = run_training_container(
        work / "job", {"train": SMS / "train.csv", "test": SMS / "test.csv"}, Hyperparameters()
    )
    assert run.succeeded, run.failure_reason
    variants = {}
    for name, bytecode in (("with bytecode", True), ("without bytecode", False)):
        print(f"building the packages {name}…", flush=True)
        packages = LambdaPackages.build(work, bytecode=bytecode)
        variants[name] = {
            "packages": packages,
            "zipped_mb": packages.zipped_bytes / 1e6,
            "unzipped_mb": packages.unzipped_bytes / 1e6,
            "import_s": [],
            "first_answer_s": [],
        }
    for _ in range(args.repeats):
        for variant in variants.values():  # alternating, so a machine slowing down hits both
            packages = variant["packages"]
            began = time.time()
            child = subprocess.run(
                packages.command(CHILD, str(run.model_dir)),
                capture_output=True,
                cwd=packages.root,
                text=True,
                env={"POWERTOOLS_METRICS_NAMESPACE": "Skiff", "PATH": "/usr/bin:/bin"},
            )
            if child.returncode != 0:
                raise RuntimeError(child.stderr[-3000:])
            imported, answered, label = child.stdout.split()
            assert label == "spam", label
            variant["import_s"].append(float(imported) - began)
            variant["first_answer_s"].append(float(answered) - began)
    rows = {
        name: {
            "import_median_s": round(statistics.median(v["import_s"]), 3),
            "first_answer_median_s": round(statistics.median(v["first_answer_s"]), 3),
            "first_answer_min_s": round(min(v["first_answer_s"]), 3),
            "unzipped_mb": round(v["unzipped_mb"], 1),
            "zipped_mb": round(v["zipped_mb"], 1),
        }
        for name, v in variants.items()
    }
    with_, without = rows["with bytecode"], rows["without bytecode"]
    result = {
        "machine": machine(),
        "python": next(iter(variants.values()))["packages"].python,
        "repeats": args.repeats,
        "variants": rows,
        "speedup_first_answer": round(without["first_answer_median_s"] / with_["first_answer_median_s"], 2),
    }
    print(f"{'':18}{'import s':>10}{'first answer s':>16}{'min s':>8}{'unzipped MB':>13}{'zipped MB':>11}")
    for name, row in rows.items():
        print(
            f"{name:18}{row['import_median_s']:>10.3f}{row['first_answer_median_s']:>16.3f}"
            f"{row['first_answer_min_s']:>8.3f}{row['unzipped_mb']:>13.1f}{row['zipped_mb']:>11.1f}"
        )
    print(f"first answer: {result['speedup_first_answer']}× faster with bytecode")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
