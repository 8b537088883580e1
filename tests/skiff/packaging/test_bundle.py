from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from skiff.errors import ConfigError
from skiff.packaging.bundle import (
    DIRECT_UPLOAD_LIMIT,
    BundleReport,
    BundleTooLargeError,
    PackageSize,
    build_all,
    build_function,
    lambda_python,
    prune,
)


def test_function_zip_holds_its_handler_and_skiff_but_not_cli_or_local(tmp_path: Path) -> None:
    package = build_function(tmp_path, "inference")
    names = zipfile.ZipFile(package.path).namelist()
    assert "functions/inference/handler.py" in names and "skiff/serve/inference.py" in names
    left_out = ("skiff/local/", "skiff/cli/", "skiff/packaging/", "functions/registry_api/")
    assert not any(n.startswith(left_out) for n in names)


def test_every_module_of_a_function_zip_has_the_runtimes_unchecked_hash_bytecode(tmp_path: Path) -> None:
    import importlib.util

    archive = zipfile.ZipFile(build_function(tmp_path, "inference").path)
    names = set(archive.namelist())
    sources = [n for n in names if n.endswith(".py")]
    cached = {
        n: importlib.util.cache_from_source(n).replace(sys.implementation.cache_tag, "cpython-312") for n in sources
    }
    assert sources and all(pyc in names for pyc in cached.values())
    assert not any(n.endswith(".pyc") and "cpython-312" not in n for n in names)  # only the runtime's version
    header = archive.read(cached["skiff/model/predictor.py"])[:8]
    magic = subprocess.run(
        [lambda_python(), "-c", "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert header[:4].hex() == magic  # Python 3.12's bytecode
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, not checked against the source


def test_a_function_without_bytecode_has_no_pycs(tmp_path: Path) -> None:
    names = zipfile.ZipFile(build_function(tmp_path, "inference", bytecode=False).path).namelist()
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_a_python_of_another_version_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_LAMBDA_PYTHON", sys.executable)
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(ConfigError, match=rf"expected SKIFF_LAMBDA_PYTHON to be a Python 3\.99 .*which is {this}"):
        lambda_python("3.99")


def test_no_python_of_the_runtimes_version_is_refused_with_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SKIFF_LAMBDA_PYTHON", raising=False)
    with pytest.raises(ConfigError, match=r"expected a Python 3\.99 .*pyenv install 3\.99.*--no-bytecode"):
        lambda_python("3.99")


def test_function_zip_is_reproducible(tmp_path: Path) -> None:
    first = Path(build_function(tmp_path / "a", "registry_api").path).read_bytes()
    second = Path(build_function(tmp_path / "b", "registry_api").path).read_bytes()
    assert first == second


def test_unknown_function_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"function should be one of \[.*'registry_api'.*\] \(got: 'x'\)",
    ):
        build_function(tmp_path, "x")


def test_prune_drops_tests_and_caches(tmp_path: Path) -> None:
    for relative in ("pkg/tests/test_a.py", "pkg/__pycache__/a.pyc", "pkg/core.py", "pkg/core.pyi"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    prune(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["pkg", "pkg/core.py"]


def test_limits_are_enforced_with_sizes_named() -> None:
    small = PackageSize("function-inference.zip", 1000, 500)
    report = BundleReport(
        "arm64", PackageSize("layer-arm64.zip", 260 * 1024 * 1024, DIRECT_UPLOAD_LIMIT + 1), {"inference": small}
    )
    with pytest.raises(BundleTooLargeError, match=r"inference \+ layer unzipped: expected <= 262144000 bytes"):
        report.check_limits()
    with pytest.raises(BundleTooLargeError, match=r"layer-arm64\.zip zipped: expected <= 52428800 bytes"):
        report.check_limits()


def _python312() -> str | None:
    candidates = [*sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12")), shutil.which("python3.12")]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.slow
def test_built_x86_64_bundle_serves_on_lambdas_python(tmp_path: Path, small_artifact: Path) -> None:
    """Build for real (pip, target platform), unpack like Lambda does, predict on Python 3.12."""
    python312 = _python312()
    if python312 is None:
        pytest.skip("no working python3.12 (the Lambda runtime's version) on this machine")
    report = build_all(tmp_path / "out", "x86_64", functions=("inference",))
    task, opt = tmp_path / "var-task", tmp_path / "opt"
    zipfile.ZipFile(report.functions["inference"].path).extractall(task)
    zipfile.ZipFile(report.layer.path).extractall(opt)
    runtime = tmp_path / "runtime"  # what the Lambda runtime itself provides: boto3, SnapStart's hooks
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(runtime),
            "--python-version",
            "3.12",
            "--only-binary=:all:",
            "boto3",
            "snapshot-restore-py==1.0.0",
        ],
        check=True,
    )
    code = (
        "import sys; sys.path[:0] = sys.argv[1:4];"
        "import functions.inference.handler; import tokenizers;"
        "from skiff.model.predictor import Predictor;"
        f"print(Predictor.from_directory({str(small_artifact)!r}).predict(['my parcel is late'])[0].label);"
        "assert 'torch' not in sys.modules;"
        # The SnapStart hook lands in the runtime's own module: the layer ships none to shadow it.
        "import snapshot_restore_py as hooks; assert hooks.__file__.startswith(sys.argv[3]), hooks.__file__;"
        "assert hooks._before_snapshot_registry[0][0].__name__ == 'load_bound_model'"
    )
    run = subprocess.run(  # -B: nothing written, so what -v reports loaded came from the zips
        [python312, "-S", "-B", "-v", "-c", code, str(task), str(opt / "python"), str(runtime)],
        capture_output=True,
        text=True,
        env={"POWERTOOLS_METRICS_NAMESPACE": "Skiff", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "delivery"
    loaded = [line for line in run.stderr.splitlines() if line.startswith("# code object from")]
    for module in (
        f"{task}/skiff/model/__pycache__/predictor.cpython-312.pyc",
        f"{opt}/python/onnxruntime/__pycache__/__init__.cpython-312.pyc",
    ):
        assert any(module in line for line in loaded), f"expected {module} loaded from its bytecode"
    compiled_now = [line for line in loaded if line.endswith(".py") and (str(task) in line or str(opt) in line)]
    assert compiled_now == []  # not one module of the packages compiled at start
    assert report.layer.unzipped_bytes + report.functions["inference"].unzipped_bytes <= 150 * 1024 * 1024


def test_the_layer_installs_exactly_the_versions_the_tests_ran_with() -> None:
    from importlib.metadata import version

    from skiff.packaging.bundle import LAYER_REQUIREMENTS, LAYER_WITHOUT_DEPENDENCIES, layer_pins

    pins = dict(p.split("==") for p in layer_pins(LAYER_REQUIREMENTS, LAYER_WITHOUT_DEPENDENCIES, "arm64"))
    for name in ("onnxruntime", "numpy", "aws-lambda-powertools", "pydantic", "pydantic-core", "tokenizers", "wrapt"):
        assert pins[name] == version(name), name
    assert "botocore" not in pins and "torch" not in pins  # the runtime's own; never the layer's
