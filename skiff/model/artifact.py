"""Self-describing model artifacts.

A trained model is a directory whose ``manifest.json`` lists every other file with its
sha256 and size, together with how the model was built (format and code version,
hyperparameters, dataset fingerprint). Anything that loads a model goes through
:func:`load_artifact`, which refuses a missing or altered file before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff import __version__
from skiff.errors import ArtifactError

FORMAT_VERSION = 1

MODEL_INT8 = "model.int8.onnx"
MODEL_FP32 = "model.fp32.onnx"
PREPROCESSING = "preprocessing.json"
LABELS = "labels.json"
METRICS = "metrics.json"
REPORT = "report.png"
MANIFEST = "manifest.json"

SERVING_FILES = (MODEL_INT8, PREPROCESSING, LABELS)
"""What serving needs (plus the manifest's ``featurizer_files``); a Lambda fetches just these."""


def required_files(manifest: Mapping[str, Any], only: Iterable[str]) -> list[str]:
    """``only`` plus what any model needs to run: its preprocessing, labels and featurizer files."""
    return sorted(set(only) | {PREPROCESSING, LABELS} | set(manifest.get("featurizer_files", [])))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The version of the code that built an artifact.

    ``SKIFF_CODE_VERSION`` wins (deployments stamp it; a SageMaker source bundle has no
    git); otherwise the package version plus the git commit when run from a checkout.
    """
    explicit = os.environ.get("SKIFF_CODE_VERSION")
    if explicit:
        return explicit
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}" if commit else __version__


def write_json(path: Path, body: Any) -> None:
    path.write_text(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_manifest(directory: str | Path, description: Mapping[str, Any]) -> dict[str, Any]:
    """List every file of ``directory`` with its hash and size, plus how it was built."""
    directory = Path(directory)
    files = {
        str(path.relative_to(directory)): {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **description,
        "files": files,
    }
    write_json(directory / MANIFEST, manifest)
    return manifest


@dataclass(frozen=True)
class ModelArtifact:
    """A verified artifact directory and the small JSON files that describe it."""

    directory: Path
    manifest: dict[str, Any]
    preprocessing: dict[str, Any]
    labels: list[str]

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def manifest_sha256(self) -> str:
        return sha256_file(self.directory / MANIFEST)

    def metrics(self) -> dict[str, Any]:
        return _read_json(self.directory / METRICS)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"expected {path.name} in {path.parent} (got: no such file)") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"expected {path.name} to be UTF-8 JSON (got: {exc})") from exc


def verify_artifact(directory: str | Path, only: Iterable[str] | None = None) -> dict[str, Any]:
    """Check files against the manifest and return it.

    ``only`` restricts the check to some files (they must still be listed), for callers
    that fetched only what they need. Raises ArtifactError naming the first bad file.
    """
    directory = Path(directory)
    manifest = _read_json(directory / MANIFEST)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"expected artifact format_version {FORMAT_VERSION} (got: {manifest.get('format_version')!r})"
        )
    listed: dict[str, dict[str, Any]] = manifest.get("files", {})
    names = list(listed) if only is None else list(only)
    for name in names:
        expected = listed.get(name)
        if expected is None:
            raise ArtifactError(f"expected {name} to be listed in {directory / MANIFEST} (got: not listed)")
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"expected {name} in {directory} (got: missing)")
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            raise ArtifactError(
                f"expected {name} with sha256 {expected['sha256'][:16]}… (got: {actual[:16]}…); "
                "the file was altered after training"
            )
    return manifest


def load_artifact(directory: str | Path, only: Iterable[str] | None = None) -> ModelArtifact:
    """Verify an artifact directory and read its description."""
    directory = Path(directory)
    if only is not None:
        only = required_files(_read_json(directory / MANIFEST), only)
    manifest = verify_artifact(directory, only)
    labels = _read_json(directory / LABELS)
    if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)):
        raise ArtifactError(f"expected labels.json to be a list of at least 2 strings (got: {labels!r})")
    return ModelArtifact(directory, manifest, _read_json(directory / PREPROCESSING), labels)
