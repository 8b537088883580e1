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

if __package__ in (None, ""):
    # SageMaker runs `python training/train.py` from the source bundle's root; make the
    # bundle's packages (skiff, training) importable the same way as in a checkout.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skiff.data.dataset import read_csv, read_csv_dir, split_dataset  # noqa: E402
from skiff.errors import SkiffError  # noqa: E402
from skiff.model.hyperparameters import Hyperparameters  # noqa: E402
from training import progress  # noqa: E402

DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"

log = logging.getLogger("training.train")


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Hyperparameters]:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=env("SM_CHANNEL_TRAIN"), help="CSV file or directory of CSV parts")
    parser.add_argument("--test", default=env("SM_CHANNEL_TEST"), help="optional evaluation CSV file or directory")
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
    return args, Hyperparameters.from_strings(_hyperparameters(rest))


def _hyperparameters(rest: list[str]) -> dict[str, str]:
    """Pairs of ``--name value``; SageMaker's own ``sagemaker_*`` keys are not ours."""
    if len(rest) % 2:
        raise SystemExit(f"expected hyperparameters as --name value pairs (got: {' '.join(rest)})")
    values: dict[str, str] = {}
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        if not flag.startswith("--"):
            raise SystemExit(f"expected a --name before {value!r} (got: {flag!r})")
        name = flag[2:].replace("-", "_")
        if not name.startswith("sagemaker_"):
            values[name] = value
    return values


def _read(path: str) -> object:
    return read_csv_dir(path) if Path(path).is_dir() else read_csv(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # The ONNX exporter's optimizer passes and onnxruntime's quantizer log every step at INFO.
    # Quiet them (the quantizer logs on the root logger), keeping our own loggers at INFO.
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", ""):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for ours in ("skiff", "training"):
        logging.getLogger(ours).setLevel(logging.INFO)
    args, hp = _parse(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args, hp)
    except SkiffError as exc:
        log.error("training failed: %s", exc)
        if args.failure_file:
            Path(args.failure_file).parent.mkdir(parents=True, exist_ok=True)
            Path(args.failure_file).write_text(f"{type(exc).__name__}: {exc}"[:1024], encoding="utf-8")
        return 2


def _run(args: argparse.Namespace, hp: Hyperparameters) -> int:
    # torch and the pipeline load only after the arguments are known to be good.
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
    metrics = build_artifact(
        data,
        hp,
        model_dir,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        on_epoch_end=on_epoch_end,
        lineage={"training_job": os.environ.get("TRAINING_JOB_NAME")},
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
