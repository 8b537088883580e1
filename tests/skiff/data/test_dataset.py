from __future__ import annotations

import io
from pathlib import Path

import pytest

from skiff.data.dataset import (
    CsvLimits,
    CsvSummary,
    Dataset,
    Example,
    in_eval_split,
    iter_examples,
    read_csv,
    read_csv_dir,
    split_dataset,
)
from skiff.errors import DatasetError


def rows(raw: bytes, limits: CsvLimits = CsvLimits()) -> list[Example]:
    return list(iter_examples(io.BytesIO(raw), "upload.csv", limits))


def rejection(raw: bytes, limits: CsvLimits = CsvLimits()) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        rows(raw, limits)
    return caught.value


def test_reads_rfc4180_quoting_and_crlf() -> None:
    raw = b'text,label\r\n"hello, ""world""",a\r\n"two\r\nlines",b\r\n'
    assert rows(raw) == [Example('hello, "world"', "a"), Example("two\r\nlines", "b")]


def test_accepts_a_utf8_byte_order_mark() -> None:
    assert rows(b"\xef\xbb\xbftext,label\nx,a\ny,b\n")[0] == Example("x", "a")


def test_summary_counts_rows_labels_and_hashes_the_bytes() -> None:
    summary = CsvSummary()
    list(iter_examples(io.BytesIO(b"text,label\nx,a\ny,b\nz,b\n"), "f.csv", summary=summary))
    assert (summary.rows, dict(summary.label_counts)) == (3, {"a": 1, "b": 2})
    assert len(summary.sha256) == 64 and summary.bytes == 23


def test_wrong_header_names_what_was_expected_and_received() -> None:
    error = rejection(b"message,category\nx,a\n")
    assert str(error) == "upload.csv: line 1: expected header text,label (got: 'message,category')"


def test_empty_file_is_rejected() -> None:
    assert "expected header text,label (got: an empty file)" in str(rejection(b""))


def test_header_only_is_rejected() -> None:
    assert "expected at least one data row after the header (got: none)" in str(rejection(b"text,label\n"))


def test_invalid_utf8_names_line_and_byte_offset() -> None:
    error = rejection(b"text,label\nok,a\ncaf\xe9,b\n")
    assert str(error) == "upload.csv: line 3: expected UTF-8 text (got: invalid byte 0xe9 at byte 19)"


def test_binary_content_is_rejected() -> None:
    error = rejection(b"text,label\n\x89PNG\x00\x00\x00,a\n")
    assert error.problems[0].line == 2 and "NUL byte" in error.reason


def test_empty_text_names_its_line() -> None:
    error = rejection(b"text,label\nfine,a\n  ,b\nalso fine,b\n")
    assert str(error) == "upload.csv: line 3: empty text"


def test_empty_label_names_its_line() -> None:
    assert str(rejection(b"text,label\nfine,a\nx,\n")) == "upload.csv: line 3: empty label"


def test_wrong_field_count_names_its_line() -> None:
    assert str(rejection(b"text,label\na,b,c\n")) == "upload.csv: line 2: expected 2 fields text,label (got: 3)"


def test_row_problems_are_collected_together() -> None:
    error = rejection(b"text,label\n,a\nx,\ny,a,b\nok,a\nok,b\n")
    assert [p.line for p in error.problems] == [2, 3, 4]
    assert str(error).endswith("(and 2 more problems)")


def test_line_numbers_count_physical_lines_of_multiline_fields() -> None:
    error = rejection(b'text,label\n"one\ntwo",a\n,b\n')
    assert error.problems[0].line == 4


def test_single_label_is_rejected() -> None:
    error = rejection(b"text,label\nx,ham\ny,ham\n")
    assert str(error) == "upload.csv: expected at least 2 distinct labels (got: 1: 'ham')"


def test_row_limit() -> None:
    error = rejection(b"text,label\nx,a\ny,b\nz,a\n", CsvLimits(max_rows=2))
    assert str(error) == "upload.csv: line 4: expected at most 2 rows (got: more)"


def test_size_limit() -> None:
    error = rejection(b"text,label\n" + b"x,a\n" * 100, CsvLimits(max_bytes=64))
    assert "expected at most 64 bytes" in str(error)


def test_text_length_limit() -> None:
    error = rejection(b"text,label\n" + b"x" * 11 + b",a\n", CsvLimits(max_text_chars=10))
    assert str(error) == "upload.csv: line 2: expected text of at most 10 characters (got: 11)"


def test_formula_like_text_is_kept_as_plain_text() -> None:
    assert rows(b'text,label\n"=HYPERLINK(""x"")",a\n+1,b\n')[0].text == '=HYPERLINK("x")'


def test_broken_quoting_is_rejected() -> None:
    assert "expected RFC 4180 CSV" in str(rejection(b'text,label\n"never closed,a\n'))


def test_rejection_serializes_for_a_report() -> None:
    report = rejection(b"text,label\n,a\n").to_dict()
    assert report == {
        "source": "upload.csv",
        "reason": "empty text",
        "problems": [{"line": 2, "message": "empty text"}],
    }


def test_eval_membership_depends_only_on_the_text() -> None:
    texts = [f"message number {i}" for i in range(2000)]
    small = Dataset(tuple(Example(t, "a" if i % 2 else "b") for i, t in enumerate(texts[:500])))
    grown = Dataset(tuple(Example(t, "a" if i % 2 else "b") for i, t in enumerate(texts)))
    small_eval = {e.text for e in split_dataset(small, 0.2)[1].examples}
    grown_eval = {e.text for e in split_dataset(grown, 0.2)[1].examples}
    assert small_eval == {t for t in grown_eval if t in set(texts[:500])}


def test_eval_fraction_is_respected_roughly() -> None:
    share = sum(in_eval_split(f"text {i}", 0.2) for i in range(10_000)) / 10_000
    assert 0.18 < share < 0.22


def test_duplicate_texts_land_in_the_same_split() -> None:
    dataset = Dataset(tuple(Example(f"t{i % 50}", "ab"[i % 2]) for i in range(400)))
    train, evaluation = split_dataset(dataset, 0.3)
    assert not {e.text for e in train.examples} & {e.text for e in evaluation.examples}


def test_fingerprint_ignores_file_encoding_details(tmp_path: Path) -> None:
    (tmp_path / "crlf.csv").write_bytes(b'text,label\r\nx,a\r\n"y",b\r\n')
    (tmp_path / "lf.csv").write_bytes(b"\xef\xbb\xbftext,label\nx,a\ny,b\n")
    assert read_csv(tmp_path / "crlf.csv").fingerprint() == read_csv(tmp_path / "lf.csv").fingerprint()


def test_channel_directory_reads_parts_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_bytes(b"text,label\nsecond,b\n")
    (tmp_path / "a.csv").write_bytes(b"text,label\nfirst,a\n")
    assert read_csv_dir(tmp_path).texts == ["first", "second"]


def test_empty_channel_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"expected at least one \.csv file \(got: none\)"):
        read_csv_dir(tmp_path)
