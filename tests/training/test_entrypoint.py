"""training/train.py under the SageMaker container contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skiff.data.dataset import read_csv, split_dataset
from skiff.errors import ParityError
from skiff.local.container import run_training_container
from skiff.model.artifact import MANIFEST, load_artifact
from tests.conftest import SMALL_HYPERPARAMETERS
from training import pipeline
from training.train import main


def test_runs_from_sm_environment_and_writes_a_verified_artifact(demo_csv: Path, tmp_path: Path) -> None:
    events: list[dict] = []
    run = run_training_container(tmp_path, {"train": demo_csv}, SMALL_HYPERPARAMETERS, on_progress=events.append)
    assert run.succeeded, run.failure_reason
    artifact = load_artifact(run.model_dir)
    assert artifact.manifest["dataset"]["eval_kind"] == "hashed-split"
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "epoch", "done"]
    assert json.loads((run.output_dir / "data" / "metrics.json").read_text())["model_family"] == "bag"
    assert artifact.manifest["lineage"]["training_job"] == "local-training-job"


def test_failure_reason_is_written_where_sagemaker_reads_it(tmp_path: Path) -> None:
    bad = tmp_path / "one-class.csv"
    bad.write_text("text,label\nhello,ham\nhi there,ham\n")
    run = run_training_container(tmp_path / "job", {"train": bad}, SMALL_HYPERPARAMETERS)
    assert run.returncode == 2
    assert run.failure_reason is not None
    assert run.failure_reason.startswith("DatasetError: ")
    assert run.failure_reason.endswith("input/data/train: expected at least 2 distinct labels (got: 1: 'ham')")
    assert not (run.model_dir / MANIFEST).exists()


def test_sagemaker_own_hyperparameters_are_ignored_and_ours_applied(demo_csv: Path, tmp_path: Path) -> None:
    code = main(
        [
            "--train",
            str(demo_csv),
            "--model-dir",
            str(tmp_path / "model"),
            "--sagemaker_program",
            "train.py",
            "--epochs",
            "1",
            "--buckets",
            "1024",
            "--char_ngrams",
            "none",
        ]
    )
    assert code == 0
    assert load_artifact(tmp_path / "model").manifest["hyperparameters"]["epochs"] == 1


def _fails_with(tmp_path: Path, *argv: str) -> str:
    """Run main with a failure file; it must fail with exit 2 and return the reason it wrote."""
    failure = tmp_path / "output" / "failure"
    assert main([*argv, "--failure-file", str(failure)]) == 2
    return failure.read_text()


def test_unknown_hyperparameter_stops_before_training_with_its_name(demo_csv: Path, tmp_path: Path) -> None:
    reason = _fails_with(tmp_path, "--train", str(demo_csv), "--model-dir", str(tmp_path), "--epoch", "1")
    assert reason.startswith("ConfigError: ") and "got unknown: ['epoch']" in reason


def test_a_hyperparameter_of_the_wrong_type_is_the_reason(demo_csv: Path, tmp_path: Path) -> None:
    reason = _fails_with(tmp_path, "--train", str(demo_csv), "--model-dir", str(tmp_path), "--epochs", "many")
    assert reason == "ConfigError: hyperparameter epochs should be of type int (got: 'many')"


def test_hyperparameters_without_values_are_the_reason(demo_csv: Path, tmp_path: Path) -> None:
    reason = _fails_with(tmp_path, "--train", str(demo_csv), "--model-dir", str(tmp_path), "--epochs")
    assert reason == "BadArguments: expected hyperparameters as --name value pairs (got: --epochs)"


def test_missing_train_channel_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SM_CHANNEL_TRAIN", raising=False)
    reason = _fails_with(tmp_path, "--model-dir", str(tmp_path))
    assert reason == "BadArguments: expected --train or its SM_ environment variable (got: neither)"


def test_an_unexpected_error_still_leaves_a_reason(
    demo_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("model")

    monkeypatch.setattr(pipeline, "build_artifact", broken)
    failure = tmp_path / "failure"
    assert main(["--train", str(demo_csv), "--model-dir", str(tmp_path), "--failure-file", str(failure)]) == 1
    assert failure.read_text() == "KeyError (unexpected, a defect; the log has the traceback): 'model'"


def test_running_out_of_memory_says_what_to_change(
    demo_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def too_big(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(pipeline, "build_artifact", too_big)
    reason = _fails_with(tmp_path, "--train", str(demo_csv), "--model-dir", str(tmp_path))
    assert reason.startswith("OutOfMemory: training ran out of memory on the instance; lower batch_size")


def test_int8_disagreement_fails_the_job_loudly(
    demo_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline.onnx_probabilities

    def int8_flips_every_answer(path: Path, featurizer: object, texts: list[str], batch_size: int = 256) -> np.ndarray:
        scores = real(path, featurizer, texts, batch_size)
        return scores[:, ::-1].copy() if path.name == "model.int8.onnx" else scores

    monkeypatch.setattr(pipeline, "onnx_probabilities", int8_flips_every_answer)
    train, evaluation = split_dataset(read_csv(demo_csv), 0.2)
    with pytest.raises(
        ParityError, match=r"expected int8/fp32 label agreement >= 0\.9900 \(got: 0\.\d+ on \d+ eval rows\)"
    ):
        pipeline.build_artifact(
            pipeline.TrainingData(train, evaluation, "hashed-split"), SMALL_HYPERPARAMETERS, tmp_path
        )
    assert not (tmp_path / MANIFEST).exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["parity"]["passed"] is False
