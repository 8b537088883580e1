"""``skiff predict --file``: score a whole CSV in batches, resumable after an interruption.

The output is the input's columns plus ``predicted_label``, ``predicted_score`` (its probability) and
``model_version`` (which version answered that row: production may change mid-file). Each
batch is written and flushed before the next is sent, so an interrupted run keeps every
finished batch; running the same command again skips the rows already in the output.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiff.errors import ConfigError

ADDED_COLUMNS = ("predicted_label", "predicted_score", "model_version")

Scorer = Callable[[list[str]], tuple[str | None, list[dict[str, Any]]]]
"""texts -> (model version or None offline, one {"label", "scores"} per text, in order)."""


@dataclass(frozen=True)
class ScoringRun:
    rows: int  # rows in the output when the run ended
    scored: int  # rows this run scored (the rest were there from an earlier run)
    seconds: float
    versions: tuple[str, ...]

    @property
    def rows_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "scored": self.scored,
            "resumed_after": self.rows - self.scored,
            "seconds": self.seconds,
            "rows_per_second": self.rows_per_second,
            "model_versions": list(self.versions),
        }


def _read_input(source: Path) -> tuple[list[str], list[list[str]]]:
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or "text" not in header:
            raise ConfigError(f"expected a CSV with a 'text' column in {source} (got columns: {header or []})")
        clashes = [c for c in ADDED_COLUMNS if c in header]
        if clashes:
            raise ConfigError(f"expected no column named {' or '.join(clashes)} in {source}: the output adds them")
        return header, [row for row in reader if row]


def _rows_already_scored(target: Path, header: list[str]) -> int:
    """Complete rows of an earlier run's output; a half-written last line is cut off."""
    if not target.is_file() or target.stat().st_size == 0:
        return 0
    content = target.read_bytes()
    if not content.endswith(b"\n"):
        content = content[: content.rfind(b"\n") + 1]
        target.write_bytes(content)
    expected = [*header, *ADDED_COLUMNS]
    with target.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        found = next(reader, None)
        if found != expected:
            raise ConfigError(
                f"expected {target} to be an earlier output of this input to resume (columns {expected}) "
                f"(got: {found}); choose another --out or delete it"
            )
        return sum(1 for _ in reader)


def _batches(rows: Sequence[list[str]], start: int, size: int) -> Iterator[tuple[int, Sequence[list[str]]]]:
    for first in range(start, len(rows), size):
        yield first, rows[first : first + size]


def score_file(
    source: Path,
    target: Path,
    scorer: Scorer,
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoringRun:
    """Score every row of ``source`` into ``target`` (see the module docstring)."""
    if batch_size < 1:
        raise ConfigError(f"expected a batch size of at least 1 (got: {batch_size})")
    header, rows = _read_input(source)
    text_column = header.index("text")
    done = _rows_already_scored(target, header)
    if done > len(rows):
        raise ConfigError(f"expected at most {len(rows)} rows in {target} for {source} (got: {done}); another input?")
    began = time.perf_counter()
    versions: list[str] = []
    with target.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if done == 0:
            writer.writerow([*header, *ADDED_COLUMNS])
        if on_progress is not None:
            on_progress(done, len(rows))
        for first, batch in _batches(rows, done, batch_size):
            version, answers = scorer([row[text_column] for row in batch])
            if len(answers) != len(batch):
                raise ConfigError(f"expected {len(batch)} answers for rows {first + 1}.. (got: {len(answers)})")
            if version and version not in versions:
                versions.append(version)
            for row, answer in zip(batch, answers, strict=True):
                score = answer["scores"][answer["label"]]
                writer.writerow([*row, answer["label"], f"{score:.6f}", version or ""])
            handle.flush()
            if on_progress is not None:
                on_progress(first + len(batch), len(rows))
    return ScoringRun(len(rows), len(rows) - done, time.perf_counter() - began, tuple(versions))
