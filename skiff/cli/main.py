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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from skiff.cli.tables import (
    answers_table,
    datasets_table,
    history_table,
    metrics_table,
    models_table,
    rejection_text,
)
from skiff.errors import ConfigError, SkiffError
from skiff.model.hyperparameters import Hyperparameters

REGION_HELP = "AWS region of a deployed stack (default: the outputs' region, else the API's host name)"

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
    """Run one training job locally and copy its artifact to ``out_dir``; returns metrics.

    A failed job's folder (its log, output and whatever the model directory holds) is kept,
    and the error names it; a finished job's folder is removed once the artifact is copied.
    """
    from skiff.local.container import run_training_container

    channels = {"train": data, **({"test": test} if test else {})}
    root = Path(tempfile.mkdtemp(prefix="skiff-job-", dir=workdir))
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
                    status=f"loss {event['loss']:.4f}  val acc {event['validation_accuracy']:.4f}"
                    + ("  exporting + quantizing" if event["epoch"] == hp.epochs else ""),
                )

        run = run_training_container(root, channels, hp, on_progress=on_progress)
    if not run.succeeded:
        raise SkiffError(
            f"training failed: {run.failure_reason}\n  the job's folder is kept: {root} (log: {run.log_path})"
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(run.model_dir, out_dir)
    shutil.rmtree(root, ignore_errors=True)
    return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))


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


def _scorer(args: argparse.Namespace) -> Callable[[list[str]], tuple[str | None, list[dict[str, Any]]]]:
    """texts -> (answering version, answers): the stack's API, or an artifact offline (--model)."""
    if args.model:
        from skiff.model.predictor import Predictor

        predictor = Predictor.from_directory(args.model, threads=args.threads)
        return lambda texts: (None, [{"label": p.label, "scores": p.scores} for p in predictor.predict(texts)])
    client = _client(args)

    def through_the_api(texts: list[str]) -> tuple[str | None, list[dict[str, Any]]]:
        answer = client.predict(texts)
        return answer["model_version"], answer["predictions"]

    return through_the_api


def cmd_predict(args: argparse.Namespace) -> int:
    if args.file:
        return _predict_file(args)
    if not args.texts:
        raise ConfigError("expected texts to classify, or --file texts.csv --out scored.csv (got: neither)")
    version = None
    if args.model:  # offline: an artifact directory, onnxruntime only
        from skiff.model.predictor import Predictor

        predictions = Predictor.from_directory(args.model, threads=args.threads).predict(args.texts)
        answers = [
            {"text": t, "label": p.label, "scores": p.scores} for t, p in zip(args.texts, predictions, strict=True)
        ]
    else:  # the stack's API: what callers of the deployed service get
        answer = _client(args).predict(args.texts)
        version = answer["model_version"]
        answers = [{"text": t, **p} for t, p in zip(args.texts, answer["predictions"], strict=True)]
    if args.json:
        print(json.dumps({"model_version": version, "predictions": answers} if version else answers))
    else:
        out.print(answers_table(answers, version))
    return 0


def _predict_file(args: argparse.Namespace) -> int:
    from skiff.cli.scoring import score_file

    if not args.out:
        raise ConfigError("expected --out scored.csv with --file (got: no --out)")
    if args.texts:
        raise ConfigError(f"expected either texts or --file (got: both, {len(args.texts)} texts and {args.file})")
    scorer = _scorer(args)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=args.json) as progress:
        task = progress.add_task(f"scoring {args.file}", total=None)
        run = score_file(
            Path(args.file),
            Path(args.out),
            scorer,
            args.batch_size,
            lambda done, total: progress.update(task, completed=done, total=total),
        )
    if args.json:
        print(json.dumps({**run.to_dict(), "out": args.out}))
    else:
        resumed = f" (resumed after {run.rows - run.scored})" if run.rows > run.scored else ""
        versions = ", ".join(run.versions) or "offline"
        out.print(
            f"scored {run.scored} rows{resumed} in {run.seconds:.1f} s ({run.rows_per_second:.0f} rows/s) "
            f"with {versions} → {args.out}"
        )
    return 0


def _client(args: argparse.Namespace) -> Any:
    from skiff.cli.client import StackClient, StackOutputs

    stack = StackClient(StackOutputs.load(getattr(args, "stack", None)), getattr(args, "region", None))
    if not stack.outputs.is_local:
        console.print(f"[dim]signing for region {stack.region} (from {stack.region_source})[/]")
    return stack


def cmd_demo(args: argparse.Namespace) -> int:
    from skiff.cli.demo import run_demo

    return run_demo(out, console, Path(args.workdir) if args.workdir else None, _hyperparameters(args.hp), args.rows)


def cmd_local(args: argparse.Namespace) -> int:
    from skiff.local import control

    if args.action == "up":
        outputs = control.up(args.api_port, json.dumps(_hyperparameters(args.hp).to_dict()) if args.hp else "{}")
    elif args.action == "down":
        control.down()
        out.print("local stack stopped")
        return 0
    else:
        outputs = control.status()
    if args.json:
        print(json.dumps(outputs))
    else:
        table = Table(title="local stack")
        table.add_column("output")
        table.add_column("value")
        for key, value in outputs.items():
            table.add_row(key, str(value))
        out.print(table)
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    stack = _client(args)
    upload = stack.upload(Path(args.file))
    with console.status(f"uploaded {upload['key']} ({upload['bytes']} bytes); waiting for validation…"):
        outcome = stack.upload_outcome(upload, timeout=args.timeout)
    if args.json:
        print(json.dumps({**upload, **outcome}))
    elif outcome["status"] == "accepted":
        out.print(
            f"[green]accepted[/] as part of dataset {outcome['dataset_version']} ({outcome['rows']} rows in all); "
            "training starts (or waits for the running job) — follow it with `skiff jobs`"
        )
    else:
        out.print(rejection_text(outcome))
    return 0 if outcome["status"] == "accepted" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = _client(args).jobs()
    if args.json:
        print(json.dumps(jobs))
        return 0
    table = Table(title="training jobs (newest first)")
    for column in ("job", "dataset", "status", "progress", "duration", "failure"):
        table.add_column(column, justify="right" if column == "duration" else "left")
    for job in jobs:
        progress = f"epoch {job['epoch']}/{job['epochs']}" if job.get("epochs") else ""
        duration = f"{job['seconds']:.0f} s" if job.get("seconds") is not None else ""
        table.add_row(
            job["name"], job["dataset_version"], job["status"], progress, duration, job.get("failure_reason") or ""
        )
    out.print(table if jobs else "no training jobs yet: upload data with `skiff upload FILE.csv`")
    return 0


def cmd_notifications(args: argparse.Namespace) -> int:
    received = _client(args).notifications()
    if args.json:
        print(json.dumps(received))
        return 0
    table = Table(title="notifications the stack sent (oldest first)")
    for column in ("at", "event", "what happened"):
        table.add_column(column, overflow="fold")
    for notice in received:
        table.add_row(str(notice.get("at", ""))[:19], notice["event"], notice["summary"])
    out.print(
        table
        if received
        else "no notifications yet: the stack sends one when a job fails, the gate decides, or it rolls back"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    stack = _client(args)
    models = stack.models(limit=args.limit)
    if args.json:
        print(json.dumps(models))
        return 0
    if not models:
        out.print("no model versions yet: upload data with `skiff upload FILE.csv`")
        return 0
    out.print(models_table(models, stack.history(), out.width))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    changes = _client(args).history()
    if args.json:
        print(json.dumps(changes))
        return 0
    out.print(history_table(changes) if changes else "production has never changed: no version has served yet")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    versions = _client(args).datasets(limit=args.limit)
    if args.json:
        print(json.dumps(versions))
        return 0
    out.print(datasets_table(versions) if versions else "no dataset versions yet: upload data with `skiff upload`")
    return 0


def cmd_rejections(args: argparse.Namespace) -> int:
    reports = _client(args).rejections(limit=args.limit)
    if args.json:
        print(json.dumps(reports))
        return 0
    if not reports:
        out.print("no rejected uploads")
    for report in reports:
        out.print(f"[bold]{report['key']}[/] ({report.get('rejected_at', '')})")
        out.print(rejection_text(report))
    return 0


FINAL_JOB_STATES = ("Completed", "Failed", "Stopped")


def cmd_logs(args: argparse.Namespace) -> int:
    import time

    stack = _client(args)
    job = args.job if args.job.startswith(f"{stack.outputs.job_prefix}-") else f"{stack.outputs.job_prefix}-{args.job}"
    shown = 0
    while True:
        # Read the status first: lines written before a job ends are all there once it has ended.
        status = stack.job_status(job) if args.follow else None
        lines = stack.log_lines(job, after=shown)
        for line in lines:
            print(json.dumps({"job": job, "line": line}) if args.json else line, flush=True)
        shown += len(lines)
        if not args.follow or status in FINAL_JOB_STATES:
            break
        time.sleep(args.poll)
    if not shown and not args.json:
        console.print(f"[dim]{job}: no output yet[/]")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    if args.canary is None:
        _report_change(args, _client(args).promote(args.version, args.reason), "promoted")
        return 0
    started = _client(args).start_canary(args.version, args.canary, args.for_minutes, args.reason)
    if args.json:
        print(json.dumps(started))
    else:
        out.print(
            f"canary: {started['version']} serves {started['percent']:g} % of requests until {started['until']} UTC; "
            "then it is promoted, or aborted if a serving alarm is in ALARM (skiff canary-abort ends it now)"
        )
    return 0


def cmd_canary_abort(args: argparse.Namespace) -> int:
    ended = _client(args).abort_canary(args.reason)
    if args.json:
        print(json.dumps(ended))
    else:
        out.print(f"canary {ended['version']} aborted: production serves every request again")
    return 0


def duration_minutes(text: str) -> float:
    """``90s``, ``5m``, ``2h`` or a bare number of minutes, as minutes."""
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
    try:
        minutes = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 5m or 2h (got: {text!r})") from None
    if minutes <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration (got: {text!r})")
    return minutes


def cmd_rollback(args: argparse.Namespace) -> int:
    _report_change(args, _client(args).rollback(args.reason), "rolled back")
    return 0


def _report_change(args: argparse.Namespace, change: dict[str, Any], verb: str) -> None:
    if args.json:
        print(json.dumps(change))
    else:
        out.print(f"{verb}: production is now {change['version']} (was {change['previous_version']})")
        if change.get("function_version"):
            out.print(f"  callers reach it through Lambda version {change['function_version']} (alias moved)")


def cmd_ui(args: argparse.Namespace) -> int:
    from skiff.dashboard.app import serve

    server = serve(_client(args), args.port)
    url = f"http://127.0.0.1:{server.server_port}/"
    if args.json:
        print(json.dumps({"url": url}), flush=True)
    else:
        out.print(f"Skiff dashboard: {url}  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from skiff.packaging.bundle import build_all

    with console.status(f"building Lambda packages for {args.arch}…"):
        report = build_all(Path(args.out), args.arch, bytecode=not args.no_bytecode)
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

    predict = commands.add_parser("predict", help="classify texts (the stack's API, or --model DIR offline)")
    predict.add_argument("--model", help="an artifact directory: predict offline with onnxruntime, no stack")
    predict.add_argument("--stack", help="a deployed stack's outputs (pulumi stack output --json); default: local")
    predict.add_argument("--region", help=REGION_HELP)
    predict.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all CPUs)")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--file", help="a CSV with a text column: score every row (with --out)")
    predict.add_argument(
        "--out", help="where --file's rows go, plus predicted_label, predicted_score, model_version; resumes if present"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="texts per request with --file (API max: 64)")
    predict.add_argument("texts", nargs="*")
    predict.set_defaults(func=cmd_predict)

    demo = commands.add_parser("demo", help="the whole loop on the local stack: upload, retrain, serve, roll back")
    demo.add_argument("--workdir", help="where to keep the demo's data and reports (default: a new temp dir)")
    demo.add_argument("--rows", type=int, default=1500, help="rows per synthetic batch")
    demo.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    demo.set_defaults(func=cmd_demo)

    local = commands.add_parser("local", help="the embedded local stack: up, down, status")
    local.add_argument("action", choices=["up", "down", "status"])
    local.add_argument("--api-port", type=int, default=0, help="port of the local API (default: any free one)")
    local.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="training hyperparameter")
    local.add_argument("--json", action="store_true")
    local.set_defaults(func=cmd_local)

    def stack_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--stack", help="a deployed stack's outputs (pulumi stack output --json); default: local")
        command.add_argument("--region", help=REGION_HELP)
        command.add_argument("--json", action="store_true")
        return command

    upload = stack_command("upload", "upload a text,label CSV; it is validated, versioned and trained on")
    upload.add_argument("file")
    upload.add_argument("--timeout", type=float, default=120, help="seconds to wait for the validation outcome")
    upload.set_defaults(func=cmd_upload)
    stack_command("jobs", "training jobs with status and progress").set_defaults(func=cmd_jobs)
    models = stack_command("models", "model versions, metrics, which serves, why others were rejected")
    models.add_argument("--limit", type=int, default=20)
    models.set_defaults(func=cmd_models)
    stack_command(
        "notifications", "what the stack told its subscribers: gate verdicts, failed jobs, rollbacks (local stack)"
    ).set_defaults(func=cmd_notifications)
    stack_command("history", "every change of production: when, from which version to which, who, why").set_defaults(
        func=cmd_history
    )
    logs = stack_command("logs", "a training job's output (the local job's log, or its CloudWatch streams)")
    logs.add_argument("job", help="the job name, or its dataset version (ds-000002)")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--poll", type=float, default=2.0, help="seconds between reads with --follow")
    logs.set_defaults(func=cmd_logs)
    datasets = stack_command("datasets", "dataset versions: rows, label counts, uploads held")
    datasets.add_argument("--limit", type=int, default=50)
    datasets.set_defaults(func=cmd_datasets)
    rejections = stack_command("rejections", "rejected uploads with the reason and the lines at fault")
    rejections.add_argument("--limit", type=int, default=50)
    rejections.set_defaults(func=cmd_rejections)
    promote = stack_command("promote", "make a version serve")
    promote.add_argument("version")
    promote.add_argument("--reason", default="promoted by hand with the skiff CLI")
    promote.add_argument(
        "--canary", type=float, metavar="PERCENT", help="serve this share of requests first (up to 50), then decide"
    )
    promote.add_argument(
        "--for",
        dest="for_minutes",
        type=duration_minutes,
        default=10.0,
        metavar="DURATION",
        help="how long the canary runs before it is promoted or aborted (90s, 5m, 2h; default 10m)",
    )
    promote.set_defaults(func=cmd_promote)
    canary_abort = stack_command("canary-abort", "end the running canary; production serves every request")
    canary_abort.add_argument("--reason", default="canary aborted by hand with the skiff CLI")
    canary_abort.set_defaults(func=cmd_canary_abort)
    rollback = stack_command("rollback", "return production to the previous version")
    rollback.add_argument("--reason", default="rolled back by hand with the skiff CLI")
    rollback.set_defaults(func=cmd_rollback)
    ui = stack_command("ui", "a web dashboard on 127.0.0.1: models, versions, history, jobs, data")
    ui.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free one)")
    ui.set_defaults(func=cmd_ui)
    bundle = commands.add_parser("bundle", help="build the Lambda function zips and dependency layer")
    bundle.add_argument("--arch", choices=["arm64", "x86_64"], default="arm64")
    bundle.add_argument("--out", default="build/lambda", help="output directory")
    bundle.add_argument(
        "--no-bytecode", action="store_true", help="leave out the runtime's .pyc files (slower cold starts)"
    )
    bundle.add_argument("--json", action="store_true")
    bundle.set_defaults(func=cmd_bundle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SkiffError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
