"""`skiff predict --file`: every row scored in order, resumable, bad input explained."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from skiff.cli.main import main
from skiff.cli.scoring import score_file
from skiff.errors import ConfigError
from skiff.model.predictor import Predictor


def offline(model_dir: Path, calls: list[int] | None = None, fail_after: int | None = None) -> Any:
    predictor = Predictor.from_directory(model_dir, threads=1)

    def scorer(texts: list[str]) -> tuple[str | None, list[dict[str, Any]]]:
        if calls is not None:
            if fail_after is not None and len(calls) == fail_after:
                raise KeyboardInterrupt  # the user pressed Ctrl-C mid-file
            calls.append(len(texts))
        return "v-test", [{"label": p.label, "scores": p.scores} for p in predictor.predict(texts)]

    return scorer


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_row_is_scored_in_order_with_its_columns_kept(
    small_artifact: Path, demo_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scored.csv"
    run = score_file(demo_csv, out, offline(small_artifact), batch_size=64)
    rows, source = read(out), read(demo_csv)
    expected = Predictor.from_directory(small_artifact).predict([r["text"] for r in source])
    assert [r["text"] for r in rows] == [r["text"] for r in source] and len(rows) == run.rows == run.scored
    assert [r["predicted_label"] for r in rows] == [p.label for p in expected]
    assert {r["model_version"] for r in rows} == {"v-test"} and run.versions == ("v-test",)
    assert all(0.0 <= float(r["predicted_score"]) <= 1.0 for r in rows)


def test_an_interrupted_run_resumes_where_it_stopped(small_artifact: Path, demo_csv: Path, tmp_path: Path) -> None:
    out, calls = tmp_path / "scored.csv", []
    with pytest.raises(KeyboardInterrupt):
        score_file(demo_csv, out, offline(small_artifact, calls, fail_after=3), batch_size=50)
    with out.open("a", encoding="utf-8") as handle:
        handle.write("half a row, cut by the cra")  # the process died mid-line
    calls.clear()
    run = score_file(demo_csv, out, offline(small_artifact, calls), batch_size=50)
    assert (run.rows - run.scored, sum(calls)) == (150, run.rows - 150)
    uninterrupted = tmp_path / "once.csv"
    score_file(demo_csv, uninterrupted, offline(small_artifact), batch_size=50)
    assert out.read_text() == uninterrupted.read_text()


def test_a_file_without_a_text_column_names_the_columns_it_has(small_artifact: Path, tmp_path: Path) -> None:
    source = tmp_path / "messages.csv"
    source.write_text("message,category\nhello,ham\n")
    with pytest.raises(
        ConfigError, match=r"expected a CSV with a 'text' column .*\(got columns: \['message', 'category'\]\)"
    ):
        score_file(source, tmp_path / "out.csv", offline(small_artifact))


def test_an_output_of_another_input_is_not_resumed(small_artifact: Path, demo_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    out.write_text("id,text,predicted_label,predicted_score,model_version\n1,hi,ham,0.9,v1\n")
    with pytest.raises(ConfigError, match=r"earlier output of this input to resume .*choose another --out"):
        score_file(demo_csv, out, offline(small_artifact))


def test_cli_predict_file_json_reports_rows_per_second(
    small_artifact: Path, demo_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scored.csv"
    code = main(["predict", "--model", str(small_artifact), "--file", str(demo_csv), "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["rows"] == report["scored"] == len(read(demo_csv)) == len(read(out))
    assert report["rows_per_second"] > 0 and report["model_versions"] == []


def test_cli_predict_without_texts_or_a_file_says_what_it_needs(
    small_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["predict", "--model", str(small_artifact)])
    assert code == 2 and "--file texts.csv --out scored.csv" in capsys.readouterr().err
