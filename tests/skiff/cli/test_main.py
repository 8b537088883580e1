from __future__ import annotations

import json
from pathlib import Path

import pytest

from skiff.cli.main import main
from tests.conftest import predict_in_a_fresh_process


def test_predict_never_imports_torch(small_artifact: Path) -> None:
    (answer,) = predict_in_a_fresh_process(small_artifact, "my parcel went to the wrong address")
    assert answer["label"] == "delivery"
    assert set(answer["scores"]) == {"account", "billing", "delivery", "technical"}
    assert sum(answer["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_predict_refuses_a_tampered_artifact(
    small_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    model = Path(shutil.copytree(small_artifact, tmp_path / "model"))
    (model / "labels.json").write_text('["a", "b", "c", "d"]')
    assert main(["predict", "--model", str(model), "hello"]) == 2
    assert "labels.json with sha256" in capsys.readouterr().err


def test_train_writes_the_artifact_and_prints_metrics(
    demo_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            str(demo_csv),
            "--out",
            str(tmp_path / "m"),
            "--json",
            "--hp",
            "epochs=2",
            "--hp",
            "buckets=2048",
            "--hp",
            "char_ngrams=none",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["training"]["epochs"] == 2
    assert (tmp_path / "m" / "manifest.json").is_file()


def test_train_reports_a_bad_file_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,a\n,b\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "m"), "--json"]) == 2
    assert "bad.csv: line 3: empty text" in capsys.readouterr().err


def test_bad_hyperparameter_syntax_is_explained(
    demo_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(demo_csv), "--out", str(tmp_path), "--hp", "epochs"]) == 2
    assert "expected --hp name=value (got: 'epochs')" in capsys.readouterr().err


def test_an_out_of_range_hyperparameter_is_refused_before_training_starts(
    demo_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(demo_csv), "--out", str(tmp_path / "m"), "--hp", "learning_rate=nan"]) == 2
    assert "learning_rate should be between 1e-07 and 1000 (got: nan)" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_failed_train_keeps_its_job_folder_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,a\n,b\n")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["train", str(bad), "--out", str(tmp_path / "m"), "--json"]) == 2
    error = capsys.readouterr().err
    (kept,) = tmp_path.glob("skiff-job-*")
    assert f"the job's folder is kept: {kept}" in error
    assert "line 3: empty text" in (kept / "output" / "training.log").read_text()


def test_models_table_says_what_the_gpu_endpoint_did_with_a_version() -> None:
    from rich.console import Console

    from skiff.cli.tables import models_table

    model = {
        "version": "v2",
        "status": "production",
        "metrics": {},
        "lineage": {},
        "status_reason": None,
        "gpu_endpoint": {"state": "failed", "reason": "ping health check", "at": "2026-12-02T00:00:00Z"},
    }
    console = Console(width=200, record=True)
    console.print(models_table([model]))
    assert "GPU endpoint failed: ping health check" in console.export_text()


MODELS = [
    {
        "version": "v20261202-164832905-bee9",
        "status": "rejected",
        "metrics": {"accuracy": 0.9912, "macro_f1": 0.9909, "served_bytes": 120_000, "batch1_p50_ms": 0.16},
        "lineage": {"dataset_version": "ds-000002"},
        "status_reason": "accuracy 0.9812 < production v20261202-164811937-df95 0.9912 - tolerance 0.0000 on 228 rows",
    },
    {
        "version": "v20261202-164811937-df95",
        "status": "production",
        "metrics": {"accuracy": 0.9912, "macro_f1": 0.9910, "served_bytes": 120_000, "batch1_p50_ms": 0.15},
        "lineage": {"dataset_version": "ds-000001"},
        "status_reason": None,
    },
]
HISTORY = [
    {"version": "v20261202-164811937-df95", "actor": "quality-gate", "reason": "promoted: accuracy 0.9912 >= baseline"}
]


def _printed(width: int) -> list[str]:
    from rich.console import Console

    from skiff.cli.tables import models_table

    console = Console(width=width, record=True)
    console.print(models_table(MODELS, HISTORY, width))
    return console.export_text().splitlines()


def test_models_fit_80_columns_with_every_reason_whole() -> None:
    lines = _printed(80)
    assert max(len(line) for line in lines) <= 80
    text = " ".join(line.strip() for line in lines)
    assert all(model["version"] in text for model in MODELS)
    assert "0.9912" in text and "0.9909" in text and "000002" in text  # no number cut short
    assert "tolerance 0.0000 on 228 rows" in text  # the rejection reason, wrapped, not cut
    assert "quality-gate: promoted: accuracy 0.9912 >= baseline" in text  # production's reason, from history


def test_models_on_a_wide_terminal_keep_the_reason_in_its_column() -> None:
    lines = _printed(200)
    (row,) = [line for line in lines if line.strip("│ ").startswith("v20261202-164811937-df95")]
    assert "quality-gate: promoted" in row and "ds-000001" in row


@pytest.mark.parametrize(("text", "minutes"), [("90s", 1.5), ("5m", 5.0), ("2h", 120.0), ("7", 7.0)])
def test_a_canary_duration_reads_seconds_minutes_or_hours(text: str, minutes: float) -> None:
    from skiff.cli.main import duration_minutes

    assert duration_minutes(text) == minutes


@pytest.mark.parametrize("text", ["five", "0m", "-1h", ""])
def test_a_canary_duration_that_is_not_one_says_what_was_expected(text: str) -> None:
    import argparse

    from skiff.cli.main import duration_minutes

    with pytest.raises(argparse.ArgumentTypeError, match="expected a"):
        duration_minutes(text)
