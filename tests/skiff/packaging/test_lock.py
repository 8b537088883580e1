"""The training job installs exactly the locked versions (the ones the tests ran), from hashed
wheels it carries, with no package index."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from skiff.errors import ConfigError, SkiffError
from skiff.packaging.bundle import GPU_ONNXRUNTIME, build_endpoint_code, build_training_source
from skiff.packaging.lock import (
    CONTRACT,
    ENDPOINT,
    IMAGE,
    IMAGE_PROVIDES,
    TRAINING_NEEDS,
    Pin,
    main,
    read_lock,
    sha256,
    wheels_for,
)

PINNED = re.compile(r"[a-z0-9][a-z0-9.-]*==[0-9][A-Za-z0-9.+!-]*")


def test_the_lock_is_this_environment() -> None:
    assert main(["--check"]) == 0, "training/requirements.lock is stale: python -m skiff.packaging.lock"


def test_every_locked_package_is_one_exact_version_with_hashes() -> None:
    pins = read_lock()
    assert pins and all(PINNED.fullmatch(p.requirement) for p in pins)
    assert all(p.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in p.hashes) for p in pins)


def test_a_loose_line_in_the_lock_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected 'name==version"):
        Pin.parse("onnxruntime>=1.20")


def test_the_lock_holds_what_training_imports_but_not_the_images_own_packages() -> None:
    names = {p.name for p in read_lock()}
    assert set(TRAINING_NEEDS) <= names
    assert not names & set(IMAGE_PROVIDES)


@pytest.fixture(scope="module")
def job_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_training_source(tmp_path_factory.mktemp("source"))


def _requirements(source: Path) -> list[str]:
    with tarfile.open(source) as archive:
        member = archive.extractfile("requirements.txt")
        assert member is not None
        return [line for line in member.read().decode().splitlines() if line and not line.startswith("#")]


def test_the_job_source_installs_the_lock_from_its_own_wheels_with_no_index(job_source: Path) -> None:
    lines = _requirements(job_source)
    assert lines[:2] == ["--no-index", "--find-links wheels"]
    assert lines[2:] == [p.line() for p in read_lock()]
    assert not [line for line in lines if ">=" in line or "<" in line]


def test_the_job_source_carries_one_image_wheel_per_locked_package_matching_its_hash(
    job_source: Path, tmp_path: Path
) -> None:
    with tarfile.open(job_source) as archive:
        wheels = [m for m in archive.getmembers() if m.name.startswith("wheels/")]
        archive.extractall(tmp_path, members=wheels, filter="data")
    assert len(wheels) == len(read_lock())
    hashes = {h for p in read_lock() for h in p.hashes}
    for member in wheels:
        assert IMAGE.supports(Path(member.name).name), member.name
        assert sha256(tmp_path / member.name) in hashes, member.name


def test_a_wheel_whose_hash_is_not_in_the_lock_is_refused(tmp_path: Path) -> None:
    (tmp_path / IMAGE.name).mkdir()
    (tmp_path / IMAGE.name / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"not the released wheel")
    pin = Pin("six", "1.17.0", ("sha256:" + "0" * 64,))
    with pytest.raises(SkiffError, match="expected pip to download the locked wheels"):
        wheels_for([pin], IMAGE, cache=tmp_path)


def test_the_endpoint_code_installs_only_its_own_pinned_and_hashed_wheels(tmp_path: Path) -> None:
    code = build_endpoint_code(tmp_path, CONTRACT, None)
    lines = [line for line in (code / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines[:2] == ["--no-index", "--find-links wheels"]
    pins = [Pin.parse(line) for line in lines[2:]]
    wheels = {path.name.split("-")[0].replace("_", "-").lower(): path for path in (code / "wheels").glob("*.whl")}
    assert {p.name.lower() for p in pins} == set(wheels) >= {"skiff", "onnxruntime", "tokenizers"}
    assert all(p.hashes == (sha256(wheels[p.name.lower()]),) for p in pins)
    assert (code / "inference.py").read_text().count("from skiff.serve.sagemaker_handler import") == 1


def test_the_gpu_endpoint_gets_onnxruntimes_cuda_build_for_the_inference_images_python() -> None:
    from infra.settings import ENDPOINT_PYTHON

    assert PINNED.fullmatch(GPU_ONNXRUNTIME) and GPU_ONNXRUNTIME.startswith("onnxruntime-gpu==")
    assert "py" + ENDPOINT.python_version.replace(".", "") == ENDPOINT_PYTHON
