"""The training job installs exactly the locked versions, which are the ones the tests ran."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from skiff.packaging.bundle import GPU_SERVING_REQUIREMENTS, build_training_source
from skiff.packaging.lock import IMAGE_PROVIDES, TRAINING_NEEDS, main, read_lock

PINNED = re.compile(r"[a-z0-9][a-z0-9.-]*==[0-9][A-Za-z0-9.+!-]*")


def test_the_lock_is_this_environment() -> None:
    assert main(["--check"]) == 0, "training/requirements.lock is stale: python -m skiff.packaging.lock"


def test_every_locked_line_is_one_exact_version() -> None:
    lines = read_lock()
    assert lines and all(PINNED.fullmatch(line) for line in lines), [x for x in lines if not PINNED.fullmatch(x)]


def test_the_lock_holds_what_training_imports_but_not_the_images_own_packages() -> None:
    names = {line.split("==")[0] for line in read_lock()}
    assert set(TRAINING_NEEDS) <= names
    assert not names & set(IMAGE_PROVIDES)


def test_the_job_source_installs_the_lock_and_nothing_loose(tmp_path: Path) -> None:
    with tarfile.open(build_training_source(tmp_path)) as archive:
        member = archive.extractfile("requirements.txt")
        assert member is not None
        requirements = member.read().decode().split()
    assert requirements == read_lock()


def test_the_gpu_endpoint_source_pins_every_package() -> None:
    assert all(PINNED.fullmatch(line) for line in GPU_SERVING_REQUIREMENTS)
