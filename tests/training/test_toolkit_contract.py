"""Contract: the built source bundle trains under SageMaker's real training toolkit, offline.

Each job is laid out from the request the launcher sends (network-isolated: the source arrives
as the ``code`` channel), run by ``sagemaker-training`` + ``sagemaker-pytorch-training`` from
PyPI in a fresh virtualenv on top of an image-like one, with no package index reachable: the
bundle's ``requirements.txt`` must install every package from its own hashed wheels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from skiff.data.dataset import read_csv, write_csv
from skiff.model.hyperparameters import Hyperparameters
from skiff.packaging.bundle import build_training_source
from skiff.packaging.lock import CONTRACT
from skiff.retrain.launch import TrainingJobSettings, training_job_request
from tests.training.toolkit import Image, JobRun, run_job

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        f"{sys.version_info.major}.{sys.version_info.minor}" != CONTRACT.python_version,
        reason=f"the lock hashes wheels for Python {CONTRACT.python_version} (the contract target), not this one",
    ),
]

TINY = {"epochs": 1, "batch_size": 16, "max_length": 32, "min_parity_agreement": 0.9}


@pytest.fixture(scope="module")
def image(pytorch_image: Image) -> Image:
    return pytorch_image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_training_source(tmp_path_factory.mktemp("bundle"), target=CONTRACT)


@pytest.fixture(scope="module")
def train_part(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> Path:
    path = tmp_path_factory.mktemp("parts") / "part-0001.csv"
    write_csv(path, read_csv(sms_spam / "train.csv").examples[:400])
    return path


def request(**hyperparameters: Any) -> dict[str, Any]:
    settings = TrainingJobSettings(
        job_prefix="skiff-contract",
        role_arn="arn:aws:iam::123456789012:role/skiff-contract-training",
        image_uri="763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.10-cpu-py313",
        source_uri="s3://skiff-contract-artifacts/source/sourcedir.tar.gz",
        artifacts_bucket="skiff-contract-artifacts",
        instance_type="ml.m5.xlarge",
        hyperparameters=Hyperparameters(**hyperparameters),
        base_model_uri="s3://skiff-contract-artifacts/base-models/tiny/",
    )
    return training_job_request(settings, "ds-000001", "s3://skiff-contract-data/channel.manifest", "eu-west-1")


def job(
    image: Image, tmp_path: Path, request: dict[str, Any], container: Path | None = None, **channels: Path
) -> JobRun:
    """One job in ``container``, else in a fresh one (whose toolkit must install every wheel)."""
    return run_job(container or image.container(tmp_path / "container"), tmp_path / "opt-ml", request, channels)


@pytest.fixture(scope="module")
def shared(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A container reused by the jobs that test something other than the install (it installs once)."""
    return image.container(tmp_path_factory.mktemp("shared") / "container")


def test_contract_bag_job_installs_the_bundles_wheels_offline_and_writes_a_model(
    image: Image, bundle: Path, train_part: Path, tmp_path: Path
) -> None:
    run = job(image, tmp_path, request(model_family="bag", **TINY), train=train_part, code=bundle)
    assert run.returncode == 0, run.log[-4000:]
    assert "Successfully installed" in run.log and "onnxruntime-1.32.0" in run.log
    assert (run.model_dir / "model.int8.onnx").is_file()
    assert json.loads((run.model_dir / "metrics.json").read_text())["parity"]["passed"] is True
    assert (run.base / "output" / "success").is_file()


def test_contract_transformer_job_runs_under_torchrun_offline_and_writes_a_model(
    image: Image, shared: Path, bundle: Path, train_part: Path, tiny_base: Path, tmp_path: Path
) -> None:
    job_request = request(model_family="transformer", learning_rate=1e-3, **TINY)
    run = job(image, tmp_path, job_request, shared, train=train_part, code=bundle, base_model=tiny_base)
    assert run.returncode == 0, run.log[-4000:]
    assert "Invoking TorchDistributed" in run.log  # the toolkit launched train.py with torchrun
    assert (run.model_dir / "model.int8.onnx").is_file()
    assert (run.model_dir / "tokenizer.json").is_file()


def test_contract_a_bad_hyperparameter_leaves_a_failure_that_names_it(
    image: Image, shared: Path, bundle: Path, train_part: Path, tmp_path: Path
) -> None:
    job_request = request(model_family="bag", **TINY)
    job_request["HyperParameters"]["epochs"] = json.dumps("many")  # as if the request were written by hand
    run = job(image, tmp_path, job_request, shared, train=train_part, code=bundle)
    assert run.returncode != 0
    assert run.failure is not None and "epochs" in run.failure and "'many'" in run.failure, run.failure


def test_contract_a_broken_part_leaves_a_failure_that_names_the_file(
    image: Image, shared: Path, bundle: Path, train_part: Path, tmp_path: Path
) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "part-0001.csv").write_bytes(train_part.read_bytes())
    (parts / "part-0002.csv").write_bytes(b"text,label\n\xff\xfe not utf-8,ham\n")
    run = job(image, tmp_path, request(model_family="bag", **TINY), shared, train=parts, code=bundle)
    assert run.returncode != 0
    assert run.failure is not None and "part-0002.csv" in run.failure, run.failure
    assert not (run.model_dir / "model.int8.onnx").exists()


def test_contract_a_bundle_without_its_wheels_fails_for_want_of_a_package_not_by_reaching_an_index(
    image: Image, train_part: Path, tmp_path: Path
) -> None:
    bare = build_training_source(tmp_path / "bare", target=None)
    run = job(image, tmp_path, request(model_family="bag", **TINY), train=train_part, code=bare)
    assert run.returncode != 0
    assert run.failure is not None and "requirements" in run.failure.lower(), run.failure
    assert "No matching distribution found" in run.log
    assert "127.0.0.1" not in run.log  # --no-index: pip never tried the (unreachable) index
