"""Labelled text datasets: strict, streaming CSV reading and a stable evaluation split.

The format is ``text,label`` CSV in UTF-8 (RFC 4180; a UTF-8 byte-order mark is accepted).
Reading is streaming and bounded, so the same code validates a multi-gigabyte upload in a
Lambda and reads training data in a job. Every rejection names the file, the line and the
problem, so a person can fix the file without guessing.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from skiff.errors import ConfigError, DatasetError, Problem

HEADER = ("text", "label")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CsvLimits:
    """Bounds on what one file may hold; exceeding any rejects the file."""

    max_bytes: int = 200 * 1024 * 1024
    max_rows: int = 2_000_000
    max_text_chars: int = 20_000
    max_problems: int = 20
    min_labels: int = 2

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_rows", "max_text_chars", "max_problems", "min_labels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} should be >= 1 (got: {getattr(self, name)})")


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class CsvSummary:
    """What a full pass over a valid file found: enough for a dataset manifest."""

    rows: int = 0
    label_counts: Counter[str] = field(default_factory=Counter)
    sha256: str = ""
    bytes: int = 0


def _decoded_lines(stream: Iterable[bytes], source: str, limits: CsvLimits, summary: CsvSummary) -> Iterator[str]:
    """Decode line by line so an invalid byte can be reported with its exact offset.

    Splitting on b"\\n" before decoding is safe for UTF-8: every byte of a multi-byte
    character is >= 0x80, so a newline byte never sits inside a character.
    """
    digest = hashlib.sha256()
    offset = 0
    for number, raw in enumerate(stream, start=1):
        offset_of_line = offset
        offset += len(raw)
        if offset > limits.max_bytes:
            raise DatasetError(
                source, [Problem(f"expected at most {limits.max_bytes} bytes (got: more, past line {number - 1})")]
            )
        digest.update(raw)
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
            offset_of_line += len(_BOM)
        nul = raw.find(b"\x00")
        if nul >= 0:
            # UTF-8 text never holds NUL; this is a binary file (or UTF-16) renamed to .csv.
            raise DatasetError(
                source,
                [Problem(f"expected UTF-8 text (got: NUL byte at byte {offset_of_line + nul}; binary file?)", number)],
            )
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = f"invalid byte 0x{raw[exc.start]:02x} at byte {offset_of_line + exc.start}"
            raise DatasetError(source, [Problem(f"expected UTF-8 text (got: {bad})", number)]) from exc
    summary.sha256 = digest.hexdigest()
    summary.bytes = offset


def iter_examples(
    stream: Iterable[bytes], source: str, limits: CsvLimits = CsvLimits(), summary: CsvSummary | None = None
) -> Iterator[Example]:
    """Yield the examples of a ``text,label`` CSV, validating as it goes.

    Row problems (wrong field count, empty text or label, over-long text) are collected up to
    ``limits.max_problems`` and raised together when the file ends; problems that make the
    rest unreadable (encoding, header, size, binary content) are raised at once. Consumers
    must exhaust the iterator: only then is the file known to be valid.
    """
    summary = summary if summary is not None else CsvSummary()
    reader = csv.reader(_decoded_lines(stream, source, limits, summary), strict=True)
    problems: list[Problem] = []
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(source, [Problem("expected header text,label (got: an empty file)", 1)])
        if tuple(h.strip().lower() for h in header) != HEADER:
            raise DatasetError(source, [Problem(f"expected header text,label (got: {','.join(header)[:80]!r})", 1)])
        line = reader.line_num + 1
        for row in reader:
            start, line = line, reader.line_num + 1
            if summary.rows >= limits.max_rows:
                raise DatasetError(source, [Problem(f"expected at most {limits.max_rows} rows (got: more)", start)])
            problem = _row_problem(row, limits)
            if problem is not None:
                problems.append(Problem(problem, start))
                if len(problems) >= limits.max_problems:
                    break
                continue
            text, label = row[0], row[1].strip()
            summary.rows += 1
            summary.label_counts[label] += 1
            yield Example(text, label)
    except csv.Error as exc:
        # The csv module raises on NUL bytes and malformed quoting: a binary or broken file.
        raise DatasetError(source, [Problem(f"expected RFC 4180 CSV (got: {exc})", reader.line_num or line)]) from exc
    if problems:
        raise DatasetError(source, problems)
    if summary.rows == 0:
        raise DatasetError(source, [Problem("expected at least one data row after the header (got: none)")])
    if len(summary.label_counts) < limits.min_labels:
        raise DatasetError(source, [_too_few_labels(summary.label_counts, limits.min_labels)])


def _too_few_labels(label_counts: Iterable[str], minimum: int) -> Problem:
    labels = sorted(label_counts)
    got = ", ".join(f"{label!r}" for label in labels)
    return Problem(f"expected at least {minimum} distinct labels (got: {len(labels)}: {got})")


def _row_problem(row: list[str], limits: CsvLimits) -> str | None:
    if len(row) != 2:
        return f"expected 2 fields text,label (got: {len(row)})"
    text, label = row
    if not text.strip():
        return "empty text"
    if not label.strip():
        return "empty label"
    if len(text) > limits.max_text_chars:
        return f"expected text of at most {limits.max_text_chars} characters (got: {len(text)})"
    return None


def byte_lines(read: Callable[[int], bytes], source: str, max_line_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Lines (each ending in b"\\n" but the last) from a ``read(n)`` function, e.g. an S3 body.

    Memory stays bounded by ``max_line_bytes``: a file with no line breaks (binary, or one
    giant field) is rejected instead of being buffered whole.
    """
    buffer = b""
    number = 1
    while chunk := read(1 << 16):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            yield buffer[: end + 1]
            buffer = buffer[end + 1 :]
            number += 1
        if len(buffer) > max_line_bytes:
            raise DatasetError(
                source, [Problem(f"expected lines of at most {max_line_bytes} bytes (got: a longer one)", number)]
            )
    if buffer:
        yield buffer


@dataclass(frozen=True)
class Dataset:
    """Examples held in memory with where they came from."""

    examples: tuple[Example, ...]
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.examples]

    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def fingerprint(self) -> str:
        """sha256 of the rows in order, independent of the file's quoting and line endings."""
        digest = hashlib.sha256()
        for e in self.examples:
            digest.update(e.text.encode("utf-8") + b"\x1f" + e.label.encode("utf-8") + b"\x1e")
        return digest.hexdigest()


def read_csv(path: str | Path, limits: CsvLimits = CsvLimits()) -> Dataset:
    path = Path(path)
    with path.open("rb") as stream:
        return Dataset(tuple(iter_examples(stream, path.name, limits)), source=str(path))


def read_csv_dir(directory: str | Path, limits: CsvLimits = CsvLimits()) -> Dataset:
    """Read every ``*.csv`` of a directory (a SageMaker channel) in name order as one dataset."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*.csv") if p.is_file())
    if not files:
        raise DatasetError(str(directory), [Problem("expected at least one .csv file (got: none)")])
    examples: list[Example] = []
    for path in files:
        # min_labels applies to the union: one part may legitimately hold a single class.
        part_limits = CsvLimits(limits.max_bytes, limits.max_rows, limits.max_text_chars, limits.max_problems, 1)
        with path.open("rb") as stream:
            examples.extend(iter_examples(stream, str(path.relative_to(directory)), part_limits))
    dataset = Dataset(tuple(examples), source=str(directory))
    if len(dataset.label_counts()) < limits.min_labels:
        raise DatasetError(str(directory), [_too_few_labels(dataset.label_counts(), limits.min_labels)])
    return dataset


EVAL_SPLIT = b"skiff-eval-split"
VALIDATION_SPLIT = b"skiff-validation-split"
"""Salts of the two hashed splits: a text's place in one says nothing about the other."""


def in_hashed_split(text: str, fraction: float, salt: bytes = EVAL_SPLIT) -> bool:
    """Whether a text belongs to the held-out part of the split named by ``salt``.

    Depends only on the text, so a row never moves between splits as the dataset grows, and
    duplicate texts always land together (no train/eval leakage through duplicates).
    """
    digest = hashlib.blake2b(salt + b"\x00" + text.strip().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def in_eval_split(text: str, eval_fraction: float) -> bool:
    """Whether a text belongs to the evaluation split (see :func:`in_hashed_split`)."""
    return in_hashed_split(text, eval_fraction, EVAL_SPLIT)


def split_dataset(
    dataset: Dataset,
    eval_fraction: float,
    salt: bytes = EVAL_SPLIT,
    names: tuple[str, str] = ("training", "evaluation"),
) -> tuple[Dataset, Dataset]:
    """(kept, held out): the rows outside and inside the hashed split named by ``salt``."""
    if not 0.0 < eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction should be between 0 and 1 (got: {eval_fraction})")
    train: list[Example] = []
    evaluation: list[Example] = []
    for example in dataset.examples:
        (evaluation if in_hashed_split(example.text, eval_fraction, salt) else train).append(example)
    for name, part in zip(names, (train, evaluation), strict=True):
        if not part:
            wanted = f"a non-empty {name} split with fraction={eval_fraction}"
            raise DatasetError(
                dataset.source,
                [Problem(f"expected {wanted} (got: {len(dataset)} rows in all)")],
            )
    short = {"training": "train", "evaluation": "eval"}
    kept, held_out = (f"{dataset.source}#{short.get(name, name)}" for name in names)
    return Dataset(tuple(train), kept), Dataset(tuple(evaluation), held_out)


def write_csv(path: str | Path, examples: Iterable[Example]) -> None:
    """Write RFC 4180 CSV (CRLF, minimal quoting) with the ``text,label`` header."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows((e.text, e.label) for e in examples)
