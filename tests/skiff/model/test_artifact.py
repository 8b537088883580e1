from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skiff.errors import ArtifactError
from skiff.model.artifact import LABELS, MANIFEST, MODEL_INT8, REPORT, load_artifact, verify_artifact


@pytest.fixture
def artifact(small_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_artifact, tmp_path / "model"))


def test_manifest_lists_every_file_with_hash_and_size(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text())
    on_disk = {p.name for p in artifact.iterdir() if p.name != MANIFEST}
    assert set(manifest["files"]) == on_disk
    assert {
        "model.int8.onnx",
        "model.fp32.onnx",
        "preprocessing.json",
        "labels.json",
        "metrics.json",
        "report.png",
    } <= on_disk
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"].values())


def test_manifest_describes_how_the_model_was_built(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text())
    assert manifest["format_version"] == 1
    assert manifest["code_version"].startswith("0.1.0")
    assert manifest["hyperparameters"]["epochs"] == 3
    assert len(manifest["dataset"]["fingerprint"]) == 64


def test_intact_artifact_loads(artifact: Path) -> None:
    loaded = load_artifact(artifact)
    assert loaded.labels == ["account", "billing", "delivery", "technical"]
    assert loaded.preprocessing["family"] == "hashed-ngrams"


def test_tampered_model_is_refused(artifact: Path) -> None:
    with (artifact / MODEL_INT8).open("r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(
        ArtifactError, match=r"expected model\.int8\.onnx with sha256 .* the file was altered after training"
    ):
        load_artifact(artifact)


def test_tampered_labels_are_refused(artifact: Path) -> None:
    (artifact / LABELS).write_text('["spam", "ham"]')
    with pytest.raises(ArtifactError, match=r"expected labels\.json with sha256"):
        load_artifact(artifact)


def test_missing_file_is_refused(artifact: Path) -> None:
    (artifact / MODEL_INT8).unlink()
    with pytest.raises(ArtifactError, match=r"expected model\.int8\.onnx in .* \(got: missing\)"):
        load_artifact(artifact)


def test_missing_manifest_is_refused(artifact: Path) -> None:
    (artifact / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"expected manifest\.json in .* \(got: no such file\)"):
        load_artifact(artifact)


def test_unknown_format_version_is_refused(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text())
    (artifact / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match=r"expected artifact format_version 1 \(got: 99\)"):
        verify_artifact(artifact)


def test_partial_verification_checks_only_the_requested_files(artifact: Path) -> None:
    (artifact / REPORT).unlink()  # a serving container fetches only what it needs
    assert load_artifact(artifact, only=[MODEL_INT8]).labels
    with pytest.raises(ArtifactError):
        load_artifact(artifact)


def test_requested_file_must_be_listed(artifact: Path) -> None:
    with pytest.raises(ArtifactError, match=r"expected extra\.bin to be listed"):
        verify_artifact(artifact, only=["extra.bin"])
