"""The tables and texts the CLI and the demo both print (rich renderables, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table


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
    if "served" in sizes:
        table.add_row("served files (MB)", f"{sizes['served'] / 1e6:.2f}", "", "", "")
    compression = metrics.get("compression") or {}
    if compression.get("method") == "bag-table-rows":
        table.add_row(
            "table rows kept / trained",
            f"{compression['kept_rows']:,}",
            f"{compression['trained_rows']:,}",
            f"of {compression['table_rows']:,}",
            "",
        )
    latency = (metrics.get("latency") or {}).get("batch1_p50_ms")
    if latency is not None:
        table.add_row("batch-1 p50 (ms, 1 thread)", f"{latency:.3f}", "", "", "")
    training = metrics["training"]
    table.add_row("train seconds", f"{training['seconds']:.1f}", f"{training['samples_per_second']:.0f}/s", "", "")
    return table


def answers_table(answers: Sequence[dict[str, Any]], version: str | None = None) -> Table:
    table = Table(title="predictions (int8 ONNX)" + (f" — model {version}" if version else ""))
    table.add_column("text")
    table.add_column("label")
    table.add_column("score", justify="right")
    for answer in answers:
        text = answer["text"]
        short = text if len(text) <= 70 else text[:67] + "…"
        table.add_row(short, answer["label"], f"{answer['scores'][answer['label']]:.4f}")
    return table


NARROW_COLUMNS = 100
"""Below this console width ``skiff models`` moves each version's "why" under the table."""


def models_table(
    models: Sequence[dict[str, Any]], history: Sequence[dict[str, Any]] = (), width: int = 200
) -> RenderableType:
    """One row per version. Wide: the reason in its own column. Narrow (an 80-column terminal):
    abbreviated columns, and each version's reason as a wrapped line under the table."""
    narrow = width < NARROW_COLUMNS
    reasons = {model["version"]: why(model, history) for model in models}
    table = Table(
        title="model versions (newest first)",
        box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD,
        pad_edge=not narrow,
        show_edge=not narrow,
    )
    numbers = ("acc", "F1", "MB", "ms") if narrow else ("accuracy", "macro-F1", "MB", "p50 ms")
    columns = ("version", "status", *numbers, "data" if narrow else "dataset", *(() if narrow else ("why",)))
    for column in columns:
        table.add_column(
            column, justify="right" if column in numbers else "left", no_wrap=column in ("version", "status", "data")
        )
    styles = {"production": "bold green", "rejected": "red", "failed": "red"}
    for model in models:
        metrics = model.get("metrics") or {}
        dataset = model["lineage"].get("dataset_version", "")
        table.add_row(
            model["version"],
            f"[{styles[model['status']]}]{model['status']}[/]" if model["status"] in styles else model["status"],
            f"{metrics['accuracy']:.4f}" if "accuracy" in metrics else "",
            f"{metrics['macro_f1']:.4f}" if "macro_f1" in metrics else "",
            f"{metrics['served_bytes'] / 1e6:.1f}" if metrics.get("served_bytes") else "",
            f"{metrics['batch1_p50_ms']:.2f}" if metrics.get("batch1_p50_ms") else "",
            dataset.removeprefix("ds-") if narrow else dataset,
            *(() if narrow else (reasons[model["version"]],)),
        )
    if not narrow:
        return table
    notes = [f"[bold]{version}[/]: {reason}" for version, reason in reasons.items() if reason]
    return Group(table, *notes)


def why(model: dict[str, Any], history: Sequence[dict[str, Any]] = ()) -> str:
    """Why a version is where it is: its status reason (rejected, failed), else the reason of the
    last alias change that made it production (``history`` newest first), plus what the GPU
    endpoint did with it (stacks with one)."""
    reason = model.get("status_reason") or ""
    if not reason:
        change = next((c for c in history if c["version"] == model["version"]), None)
        reason = f"{change['actor']}: {change['reason']}" if change else ""
    endpoint = model.get("gpu_endpoint") or {}
    parts = [reason]
    if endpoint:
        parts.append(
            f"GPU endpoint {endpoint['state']}" + (f": {endpoint['reason']}" if endpoint.get("reason") else "")
        )
    return "; ".join(p for p in parts if p)


def history_table(changes: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="production changes (newest first)")
    for column in ("at", "action", "from", "to", "Lambda version", "by", "why"):
        table.add_column(column, overflow="fold", no_wrap=column in ("from", "to"))
    for change in changes:
        table.add_row(
            str(change.get("at", ""))[:19],
            change["action"],
            change.get("previous_version") or "—",
            change["version"],
            change.get("function_version") or "—",  # where the inference alias went for it
            change.get("actor", ""),
            change.get("reason", ""),
        )
    return table


def datasets_table(versions: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="dataset versions (newest first)")
    for column in ("version", "rows", "uploads", "labels", "created"):
        table.add_column(column, justify="right" if column in ("rows", "uploads") else "left")
    for version in versions:
        labels = ", ".join(f"{label} {count:,}" for label, count in version["label_counts"].items())
        table.add_row(
            version["dataset_version"],
            f"{version['rows']:,}",
            str(version["parts_count"]),
            labels,
            str(version["created_at"])[:19],
        )
    return table


def rejection_text(outcome: dict[str, Any]) -> str:
    problems = "\n".join(
        f"  - line {p['line']}: {p['message']}" if p.get("line") else f"  - {p['message']}" for p in outcome["problems"]
    )
    return (
        f"[red]rejected[/]: {outcome['reason']}\n{problems}\n"
        f"kept as {outcome.get('quarantined_as')}; fix the file and upload it again"
    )


def notifications_table(received: list[dict[str, Any]]) -> Table:
    table = Table(title="notifications the stack sent (oldest first)")
    for column in ("at", "event", "what happened"):
        table.add_column(column, overflow="fold")
    for notice in received:
        table.add_row(str(notice.get("at") or "")[:19], notice["event"], notice["summary"])
    return table
