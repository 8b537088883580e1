"""SageMaker training entry point (script mode), also runnable anywhere with explicit paths.

SageMaker contract read here:
  SM_CHANNEL_TRAIN        directory of ``text,label`` CSV parts (required)
  SM_CHANNEL_TEST         optional directory; when present it is the evaluation set,
                          otherwise a stable hashed split of the training data is used
  SM_MODEL_DIR            where the artifact goes (SageMaker tars it into model.tar.gz)
  SM_OUTPUT_DATA_DIR      extra outputs (a copy of metrics.json)
  SM_OUTPUT_DIR           ``failure`` is written here on error: SageMaker shows it as FailureReason
  SM_NUM_GPUS             0 forces CPU
  hyperparameters         ``--name value`` arguments (see skiff.model.hyperparameters)
  /opt/ml/checkpoints     synced to S3 by managed spot; resumed from on restart

Progress goes to stdout as one JSON object per line (training/progress.py) so the CLI can
draw a progress bar and CloudWatch keeps a readable log.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if __package__ in (None, ""):
    # SageMaker runs `python training/train.py` from the source bundle's root; make the
    # bundle's packages (skiff, training) importable the same way as in a checkout.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from skiff.model.hyperparameters import Hyperparameters

DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"

log = logging.getLogger("training.train")


class _Arguments(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # a reason for the failure file, not a bare exit
        raise BadArguments(message)


class BadArguments(Exception):
    pass


def _failure_file(argv: list[str]) -> Path | None:
    """Where the reason goes: ``--failure-file``, else ``$SM_OUTPUT_DIR/failure`` (read before anything can fail)."""
    for i, word in enumerate(argv):
        if word.startswith("--failure-file="):
            return Path(word.split("=", 1)[1])
        if word == "--failure-file" and i + 1 < len(argv):
            return Path(argv[i + 1])
    output_dir = os.environ.get("SM_OUTPUT_DIR")
    return Path(output_dir) / "failure" if output_dir else None


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Hyperparameters]:
    from skiff.model.hyperparameters import Hyperparameters

    env = os.environ.get
    parser = _Arguments(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=env("SM_CHANNEL_TRAIN"), help="CSV file or directory of CSV parts")
    parser.add_argument("--test", default=env("SM_CHANNEL_TEST"), help="optional evaluation CSV file or directory")
    parser.add_argument(
        "--teacher", default=env("SM_CHANNEL_TEACHER"), help="optional Skiff artifact directory to distill from"
    )
    parser.add_argument(
        "--unlabeled",
        default=env("SM_CHANNEL_UNLABELED"),
        help="optional CSVs of texts for the teacher to score",
    )
    parser.add_argument("--model-dir", default=env("SM_MODEL_DIR"))
    parser.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR"))
    parser.add_argument(
        "--checkpoint-dir",
        default=DEFAULT_CHECKPOINT_DIR if Path(DEFAULT_CHECKPOINT_DIR).is_dir() else None,
        help=f"resumable checkpoints (default: {DEFAULT_CHECKPOINT_DIR} when it exists, else none)",
    )
    parser.add_argument(
        "--failure-file", default=str(Path(env("SM_OUTPUT_DIR", "")) / "failure") if env("SM_OUTPUT_DIR") else None
    )
    args, rest = parser.parse_known_args(argv)
    missing = [name for name in ("train", "model_dir") if getattr(args, name) is None]
    if missing:
        parser.error(f"expected --{missing[0].replace('_', '-')} or its SM_ environment variable (got: neither)")
    hp = Hyperparameters.from_strings(_hyperparameters(rest))
    if hp.teacher_version and not args.teacher:
        parser.error(
            f"expected the teacher channel (--teacher or SM_CHANNEL_TEACHER) for teacher_version="
            f"{hp.teacher_version} (got: neither)"
        )
    if args.unlabeled and not args.teacher:
        parser.error("expected a teacher to score the unlabeled channel's texts (got: no teacher channel)")
    return args, hp


def _hyperparameters(rest: list[str]) -> dict[str, str]:
    """Pairs of ``--name value``; SageMaker's own ``sagemaker_*`` keys are not ours."""
    if len(rest) % 2:
        raise BadArguments(f"expected hyperparameters as --name value pairs (got: {' '.join(rest)})")
    values: dict[str, str] = {}
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        if not flag.startswith("--"):
            raise BadArguments(f"expected a --name before {value!r} (got: {flag!r})")
        name = flag[2:].replace("-", "_")
        if not name.startswith("sagemaker_"):
            values[name] = value
    return values


def _read(path: str) -> object:
    from skiff.data.dataset import read_csv, read_csv_dir

    return read_csv_dir(path) if Path(path).is_dir() else read_csv(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # The ONNX exporter's optimizer passes and onnxruntime's quantizer log every step at INFO.
    # Quiet them (the quantizer logs on the root logger), keeping our own loggers at INFO.
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", ""):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for ours in ("skiff", "training"):
        logging.getLogger(ours).setLevel(logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    failure_file = _failure_file(argv)
    try:
        args, hp = _parse(argv)
        return _run(args, hp)
    except Exception as exc:  # every failure leaves its reason where SageMaker shows it
        code, reason = _reason(exc)
        log.error("training failed: %s", reason, exc_info=code != 2)
        if failure_file is not None:
            failure_file.parent.mkdir(parents=True, exist_ok=True)
            failure_file.write_text(reason[:1024], encoding="utf-8")  # SageMaker keeps the first 1 KB
        return code


def _reason(exc: Exception) -> tuple[int, str]:
    """Exit code and one clear sentence: 2 for what the user can fix, 1 for a defect."""
    from skiff.errors import SkiffError

    if isinstance(exc, BadArguments):
        return 2, f"BadArguments: {exc}"
    if isinstance(exc, SkiffError):
        return 2, f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        where = "the GPU" if type(exc).__name__ == "OutOfMemoryError" else "the instance"
        return 2, (
            f"OutOfMemory: training ran out of memory on {where}; lower batch_size or max_length, "
            f"or choose a larger instance type ({type(exc).__name__}: {str(exc)[:200]})"
        )
    if isinstance(exc, ImportError):
        return 1, f"ImportError: the job's environment lacks a package ({exc}); check the source bundle's requirements"
    return 1, f"{type(exc).__name__} (unexpected, a defect; the log has the traceback): {exc}"


def _run(args: argparse.Namespace, hp: Hyperparameters) -> int:
    # torch and the pipeline load only after the arguments are known to be good.
    from skiff.data.dataset import split_dataset
    from training import progress
    from training.pipeline import TrainingData, build_artifact

    dataset = _read(args.train)
    if args.test:
        data = TrainingData(dataset, _read(args.test), "test-channel")  # type: ignore[arg-type]
    else:
        train, evaluation = split_dataset(dataset, hp.eval_fraction)  # type: ignore[arg-type]
        data = TrainingData(train, evaluation, "hashed-split")
    progress.emit("start", epochs=hp.epochs, train_rows=len(data.train), eval_rows=len(data.evaluation))

    def on_epoch_end(record: object) -> None:
        progress.emit("epoch", epochs=hp.epochs, **vars(record))

    model_dir = Path(args.model_dir)
    teacher = None
    if args.teacher:
        from training.distillation import Teacher, read_texts

        teacher = Teacher.load(Path(args.teacher), hp.teacher_version)
        unlabeled = read_texts(Path(args.unlabeled)) if args.unlabeled else []
    metrics = build_artifact(
        data,
        hp,
        model_dir,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        on_epoch_end=on_epoch_end,
        lineage={"training_job": os.environ.get("TRAINING_JOB_NAME")},
        teacher=teacher,
        unlabeled=unlabeled if teacher else (),
    )
    if not metrics:
        return 0  # a DDP rank other than 0: it helped train; rank 0 wrote the artifact
    if args.output_data_dir:
        Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(model_dir / "metrics.json", Path(args.output_data_dir) / "metrics.json")
    progress.emit("done", accuracy=metrics["eval"]["int8"]["accuracy"], model_dir=str(model_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
