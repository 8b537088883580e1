"""The ``skiff`` command line.

Training runs as a separate process under the SageMaker container contract (see
skiff.local.container), so this module, like the rest of skiff, never imports torch:
``skiff predict`` starts fast and stays small.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from skiff.errors import SkiffError
from skiff.hyperparameters import Hyperparameters

console = Console(stderr=True)
out = Console()


def _hyperparameters(pairs: Sequence[str]) -> Hyperparameters:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SkiffError(f"expected --hp name=value (got: {pair!r})")
        values[name.strip().replace("-", "_")] = value.strip()
    return Hyperparameters.from_strings(values)


def train_model(
    data: Path,
    out_dir: Path,
    hp: Hyperparameters,
    test: Path | None = None,
    workdir: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run one training job locally and copy its artifact to ``out_dir``; returns metrics."""
    from skiff.local.container import run_training_container

    channels = {"train": data, **({"test": test} if test else {})}
    with tempfile.TemporaryDirectory(prefix="skiff-job-", dir=workdir) as root:
        with Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            task = progress.add_task("train", total=hp.epochs, status="reading data")

            def on_progress(event: dict[str, Any]) -> None:
                if event["event"] == "start":
                    progress.update(task, status=f"{event['train_rows']} train / {event['eval_rows']} eval rows")
                elif event["event"] == "epoch":
                    progress.update(
                        task,
                        completed=event["epoch"],
                        status=f"loss {event['loss']:.4f}  eval acc {event['eval_accuracy']:.4f}"
                        + ("  exporting + quantizing" if event["epoch"] == hp.epochs else ""),
                    )

            run = run_training_container(Path(root), channels, hp, on_progress=on_progress)
        if not run.succeeded:
            raise SkiffError(f"training failed: {run.failure_reason} (full log: rerun with the same data to see it)")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.copytree(run.model_dir, out_dir)
    return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))


def metrics_table(metrics: dict[str, Any], title: str = "evaluation") -> Table:
    evaluation = metrics["eval"]
    table = Table(title=f"{title} — {evaluation['rows']} rows ({evaluation['kind']})")
    table.add_column("label")
    for column in ("precision", "recall", "F1", "support"):
        table.add_column(column, justify="right")
    for label, row in evaluation["int8"]["per_class"].items():
        table.add_row(label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    table.add_section()
    parity = metrics["parity"]
    sizes = metrics["sizes"]
    table.add_row(
        "accuracy int8 / fp32", f"{evaluation['int8']['accuracy']:.4f}", f"{evaluation['fp32']['accuracy']:.4f}", "", ""
    )
    table.add_row(
        "macro-F1 int8 / fp32", f"{evaluation['int8']['macro_f1']:.4f}", f"{evaluation['fp32']['macro_f1']:.4f}", "", ""
    )
    table.add_row("majority baseline", f"{evaluation['majority_baseline_accuracy']:.4f}", "", "", "")
    table.add_row(
        "int8/fp32 agreement", f"{parity['label_agreement']:.4f}", f"max Δ {parity['max_score_difference']:.4f}", "", ""
    )
    table.add_row(
        "size int8 / fp32 (MB)",
        f"{sizes['model.int8.onnx'] / 1e6:.1f}",
        f"{sizes['model.fp32.onnx'] / 1e6:.1f}",
        "",
        "",
    )
    training = metrics["training"]
    table.add_row("train seconds", f"{training['seconds']:.1f}", f"{training['samples_per_second']:.0f}/s", "", "")
    return table


def predictions_table(texts: Sequence[str], predictions: Sequence[Any]) -> Table:
    table = Table(title="predictions (int8 ONNX)")
    table.add_column("text")
    table.add_column("label")
    table.add_column("score", justify="right")
    for text, prediction in zip(texts, predictions, strict=True):
        table.add_row(
            text if len(text) <= 70 else text[:67] + "…", prediction.label, f"{prediction.scores[prediction.label]:.4f}"
        )
    return table


def cmd_train(args: argparse.Namespace) -> int:
    metrics = train_model(
        Path(args.data),
        Path(args.out),
        _hyperparameters(args.hp),
        Path(args.test) if args.test else None,
        quiet=args.json,
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        out.print(metrics_table(metrics))
        out.print(f"artifact: {args.out}  (report picture: {Path(args.out) / 'report.png'})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from skiff.predictor import Predictor

    predictor = Predictor.from_directory(args.model, threads=args.threads)
    predictions = predictor.predict(args.texts)
    if args.json:
        print(
            json.dumps(
                [
                    {"text": t, "label": p.label, "scores": p.scores}
                    for t, p in zip(args.texts, predictions, strict=True)
                ]
            )
        )
    else:
        out.print(predictions_table(args.texts, predictions))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from skiff.data import write_csv
    from skiff.demo_data import generate
    from skiff.predictor import Predictor

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="skiff-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "support-tickets.csv"
    write_csv(data, generate(args.rows, seed=args.seed))
    out.print(f"[bold]1.[/] generated {args.rows} synthetic support messages (the project's own demo data) → {data}")
    out.print("[bold]2.[/] training under the SageMaker container contract (train → ONNX → int8 → parity check)")
    model_dir = workdir / "model"
    metrics = train_model(data, model_dir, _hyperparameters(args.hp))
    out.print(metrics_table(metrics, "demo model"))
    samples = [
        "hi, the app keeps crashing since the update, is the service down?",
        "my parcel went to the wrong address, please resend it",
        "I was charged twice for the subscription, can you refund it?",
        "my account is locked and the code does not work",
    ]
    out.print("[bold]3.[/] serving with onnxruntime only (no torch in this process)")
    out.print(predictions_table(samples, Predictor.from_directory(model_dir).predict(samples)))
    out.print(f'next: open {model_dir / "report.png"}, or run: skiff predict --model {model_dir} "your text"')
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from skiff.bundle import build_all

    with console.status(f"building Lambda packages for {args.arch}…"):
        report = build_all(Path(args.out), args.arch)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    table = Table(title=f"Lambda packages ({args.arch}); limits: 250 MB unzipped incl. layers, 50 MB zipped")
    for column in ("package", "unzipped MB", "zipped MB"):
        table.add_column(column, justify="right" if column != "package" else "left")
    for package in (report.layer, *report.functions.values()):
        table.add_row(
            Path(package.path).name, f"{package.unzipped_bytes / 1e6:.1f}", f"{package.zipped_bytes / 1e6:.2f}"
        )
    out.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skiff", description="Serverless model operations for text classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on a text,label CSV and write a verified artifact")
    train.add_argument("data", help="training CSV (text,label) or a directory of CSV parts")
    train.add_argument("--test", help="evaluation CSV; default: a stable hashed split of the data")
    train.add_argument("--out", required=True, help="artifact directory to write (replaced if it exists)")
    train.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter, repeatable")
    train.add_argument("--json", action="store_true", help="print metrics as JSON, no progress bar")
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser("predict", help="classify texts with an artifact's int8 ONNX model")
    predict.add_argument("--model", required=True, help="artifact directory")
    predict.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all CPUs)")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("texts", nargs="+")
    predict.set_defaults(func=cmd_predict)

    demo = commands.add_parser("demo", help="generate demo data, train, and serve predictions")
    demo.add_argument("--workdir", help="where to keep the demo's data and model (default: a new temp dir)")
    demo.add_argument("--rows", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--hp", action="append", default=["epochs=5"], metavar="NAME=VALUE")
    demo.set_defaults(func=cmd_demo)
    bundle = commands.add_parser("bundle", help="build the Lambda function zips and dependency layer")
    bundle.add_argument("--arch", choices=["arm64", "x86_64"], default="arm64")
    bundle.add_argument("--out", default="build/lambda", help="output directory")
    bundle.add_argument("--json", action="store_true")
    bundle.set_defaults(func=cmd_bundle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SkiffError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
