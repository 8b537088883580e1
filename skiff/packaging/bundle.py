"""Build the Lambda deployment packages: one zip per function and a shared dependency layer.

Dependencies are installed for the target, not for this machine:
``pip install --platform <manylinux tag> --only-binary=:all: --python-version 3.12``, so an
arm64 layer can be built on x86_64. What is not needed at run time (tests, headers, type
stubs, onnxruntime's training and tooling packages) is dropped, sizes are reported, and the
build fails above Lambda's limits instead of failing at deploy time.

Every package carries bytecode compiled by the runtime's own Python version (``.pyc`` files are
specific to a minor version, and Lambda's /var/task and /opt are read-only, so a package without
them compiles every imported module on every cold start). The pycs are ``unchecked-hash``: no
timestamps, so the same inputs give the same zip, and the runtime never re-reads the source to
validate them.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skiff.errors import ConfigError, SkiffError
from skiff.packaging.lock import ENDPOINT, IMAGE, Target

ROOT = Path(__file__).resolve().parents[2]

PLATFORMS = {
    "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64"),
    "arm64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64"),
}
LAMBDA_PYTHON = "3.12"
UNZIPPED_LIMIT = 250 * 1024 * 1024  # function + all layers
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024  # zipped, per package uploaded without S3

# What each function needs beyond the Lambda Python runtime (which already has boto3).
LAYER_REQUIREMENTS = ("onnxruntime>=1.20", "numpy>=1.26", "aws-lambda-powertools>=3.0", "pydantic>=2.6")
LAYER_WITHOUT_DEPENDENCIES = ("tokenizers>=0.20", "aws-xray-sdk>=2.14", "wrapt>=1.14")
"""Installed with --no-deps: serving only loads tokenizer.json; tokenizers' huggingface-hub
dependency (and hf-xet, fsspec, pyyaml… ~20 MB) is for downloading models, which serving never
does. aws-xray-sdk (Powertools' Tracer) needs botocore, which the Lambda runtime already has,
and wrapt, listed here."""
FUNCTIONS = ("inference", "registry_api", "upload_trigger", "training_events", "alarm_rollback")

PRUNE = (
    "*/__pycache__",  # whatever a wheel ships is removed: compile_bytecode writes the runtime's own
    "*.pyc",
    "*/tests",
    "*/test",
    "*/testing",
    "*.pyi",
    "*/include",
    "bin",
    "numpy/_core/lib/pkgconfig",
    "numpy/f2py",
    "numpy/distutils",
    "numpy/typing",
    "onnxruntime/tools",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/datasets",
    "onnxruntime/backend",
    # The C/C++ API library: the Python binding links onnxruntime statically (readelf shows no
    # NEEDED entry for it) and no Python code loads it; 35 MB unzipped.
    "onnxruntime/capi/libonnxruntime.so*",
    "*.dist-info/RECORD",
    "*.dist-info/INSTALLER",
    "*.dist-info/REQUESTED",
)
# skiff rooms that only the CLI, training or the local stack use.
FUNCTION_EXCLUDES = ("skiff/cli", "skiff/data/synthetic.py", "skiff/local", "skiff/packaging", "*/__pycache__")


class BundleTooLargeError(SkiffError):
    """A package is above a Lambda limit."""


def _version_of(interpreter: str) -> str | None:
    try:
        run = subprocess.run(
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def lambda_python(version: str = LAMBDA_PYTHON) -> str:
    """An interpreter of the functions' runtime version, to compile their bytecode with:
    ``SKIFF_LAMBDA_PYTHON`` if set, else this one if it matches, else ``python<version>`` on the
    PATH, else pyenv's. Refuses, naming how to get one, when none is found."""
    explicit = os.environ.get("SKIFF_LAMBDA_PYTHON")
    if explicit:
        found = _version_of(explicit)
        if found != version:
            raise ConfigError(
                f"expected SKIFF_LAMBDA_PYTHON to be a Python {version} (the Lambda runtime's) "
                f"(got: {explicit}, which is {found or 'not a working interpreter'})"
            )
        return explicit
    candidates = [
        sys.executable,
        shutil.which(f"python{version}"),
        *sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"{version}.*" / "bin" / f"python{version}"))),
    ]
    for candidate in filter(None, candidates):
        if _version_of(candidate) == version:
            return candidate
    raise ConfigError(
        f"expected a Python {version} to compile the Lambda packages' bytecode for the python{version} "
        f"runtime (got: none; this is {sys.version_info.major}.{sys.version_info.minor}). Install one "
        f"(`pyenv install {version}`, or your system's python{version} package) or point "
        f"SKIFF_LAMBDA_PYTHON at it; `skiff bundle --no-bytecode` builds without (slower cold starts)"
    )


def compile_bytecode(directory: Path, runtime_root: str, interpreter: str) -> None:
    """Compile every module under ``directory`` in place, recording the path it will have at run
    time (``runtime_root``: /var/task for a function, /opt for a layer) for tracebacks."""
    run = subprocess.run(
        [interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
        + ["-s", str(directory), "-p", runtime_root, str(directory)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SkiffError(f"expected {interpreter} to compile {directory} (got: {(run.stdout + run.stderr)[-800:]})")


@dataclass(frozen=True)
class PackageSize:
    path: str
    unzipped_bytes: int
    zipped_bytes: int


@dataclass
class BundleReport:
    architecture: str
    layer: PackageSize
    functions: dict[str, PackageSize] = field(default_factory=dict)

    def check_limits(self) -> None:
        problems = []
        for name, package in self.functions.items():
            total = package.unzipped_bytes + self.layer.unzipped_bytes
            if total > UNZIPPED_LIMIT:
                problems.append(f"{name} + layer unzipped: expected <= {UNZIPPED_LIMIT} bytes (got: {total})")
        for package in (self.layer, *self.functions.values()):
            if package.zipped_bytes > DIRECT_UPLOAD_LIMIT:
                name, size = Path(package.path).name, package.zipped_bytes
                problems.append(f"{name} zipped: expected <= {DIRECT_UPLOAD_LIMIT} bytes (got: {size})")
        if problems:
            raise BundleTooLargeError("; ".join(problems))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _matches(relative: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch("/" + relative, "*/" + p.lstrip("*/")) for p in patterns)


def prune(directory: Path, patterns: Sequence[str] = PRUNE) -> None:
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts)):
        if path.exists() and _matches(str(path.relative_to(directory)), patterns):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _zip(source: Path, target: Path, prefix: str = "") -> PackageSize:
    unzipped = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                # Fixed timestamps: the same inputs give a byte-identical zip (stable deploy diffs).
                info = zipfile.ZipInfo(prefix + str(path.relative_to(source)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
                unzipped += path.stat().st_size
    return PackageSize(str(target), unzipped, target.stat().st_size)


def build_layer(
    out_dir: Path,
    architecture: str,
    requirements: Sequence[str] = LAYER_REQUIREMENTS,
    without_dependencies: Sequence[str] = LAYER_WITHOUT_DEPENDENCIES,
    bytecode: bool = True,
) -> PackageSize:
    """pip-install ``requirements`` for the target, compiled for the runtime unless ``bytecode``
    is False; reuses an earlier build of the same inputs."""
    if architecture not in PLATFORMS:
        raise ConfigError(f"architecture should be one of {sorted(PLATFORMS)} (got: {architecture!r})")
    interpreter = lambda_python() if bytecode else None
    archive = out_dir / f"layer-{architecture}.zip"
    stamp = out_dir / f"layer-{architecture}.inputs.json"
    pins = layer_pins(requirements, without_dependencies, architecture)
    inputs = {
        "requirements": list(requirements),
        "pins": pins,
        "without_dependencies": list(without_dependencies),
        "platforms": list(PLATFORMS[architecture]),
        "python": LAMBDA_PYTHON,
        "prune": list(PRUNE),
        "bytecode": bytecode,
    }
    if archive.is_file() and stamp.is_file() and json.loads(stamp.read_text())["inputs"] == inputs:
        return PackageSize(**json.loads(stamp.read_text())["size"])
    staging = out_dir / f"layer-{architecture}"
    shutil.rmtree(staging, ignore_errors=True)
    target = staging / "python"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON,
        "--only-binary=:all:",
        *[f"--platform={p}" for p in PLATFORMS[architecture]],
    ]
    staging.mkdir(parents=True, exist_ok=True)
    constraints = staging / "constraints.txt"
    constraints.write_text("".join(pin + "\n" for pin in pins), encoding="utf-8")
    for extra, packages in (([], requirements), (["--no-deps"], without_dependencies)):
        if not packages:
            continue
        result = subprocess.run([*command, *extra, "-c", str(constraints), *packages], capture_output=True, text=True)
        if result.returncode != 0:
            raise SkiffError(
                f"expected pip to install the layer for {architecture} (got: {result.stderr.strip()[-800:]})"
            )
    constraints.unlink()
    prune(target)
    if interpreter:
        compile_bytecode(staging, "/opt", interpreter)
    size = _zip(staging, archive)
    stamp.write_text(json.dumps({"inputs": inputs, "size": asdict(size)}))
    return size


def layer_pins(requirements: Sequence[str], without_dependencies: Sequence[str], architecture: str) -> list[str]:
    """``name==version`` for every package the layer installs, at this environment's versions:
    the ones the tests ran with (a range resolved at deploy time could land on a broken release)."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    from skiff.packaging.lock import closure, package_key

    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[architecture]
    names = [Requirement(r).name for r in requirements]
    pinned = closure(names, Target("lambda", LAMBDA_PYTHON, machine).markers)
    for requirement in (*requirements, *without_dependencies):  # the image-provided ones (numpy) too
        name = Requirement(requirement).name
        pinned.setdefault(package_key(name), version(name))
    return [f"{name}=={found}" for name, found in sorted(pinned.items())]


def build_function(out_dir: Path, name: str, bytecode: bool = True) -> PackageSize:
    if name not in FUNCTIONS:
        raise ConfigError(f"function should be one of {list(FUNCTIONS)} (got: {name!r})")
    staging = out_dir / f"function-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "skiff", staging / "skiff", ignore=ignore)
    prune(staging, FUNCTION_EXCLUDES)
    (staging / "functions").mkdir()
    shutil.copy(ROOT / "functions" / "__init__.py", staging / "functions" / "__init__.py")
    shutil.copytree(ROOT / "functions" / name, staging / "functions" / name, ignore=ignore)
    if bytecode:
        compile_bytecode(staging, "/var/task", lambda_python())
    return _zip(staging, out_dir / f"function-{name}.zip")


ENDPOINT_NEEDS = ("onnxruntime", "tokenizers")
"""What skiff.serve.sagemaker_handler imports beyond the inference image's Python and numpy."""
GPU_ONNXRUNTIME = "onnxruntime-gpu==1.31.1"
"""onnxruntime's CUDA build (no 1.32 of it exists yet); same dependencies as the CPU build."""
ENDPOINT_ENTRY = "inference.py"
ENDPOINT_ENTRY_SOURCE = (
    b'"""The SageMaker inference toolkit imports this module from code/ (SAGEMAKER_PROGRAM)."""\n'
    b"from skiff.serve.sagemaker_handler import input_fn, model_fn, output_fn, predict_fn  # noqa: F401\n"
)


def build_endpoint_code(out_dir: Path, target: Target = ENDPOINT, onnxruntime: str | None = GPU_ONNXRUNTIME) -> Path:
    """``code/`` of the GPU endpoint's model, as the PyTorch inference toolkit reads it.

    The toolkit ignores a source tarball: it imports ``code/inference.py`` from the model
    directory and, before the server starts, runs ``pip install -r code/requirements.txt``.
    That file says ``--no-index`` and names every wheel in ``code/wheels/`` (skiff itself, built
    here, and onnxruntime with its dependencies at this environment's versions) pinned and
    hashed, so the endpoint installs exactly these and runs network-isolated. ``onnxruntime``
    replaces the CPU build (None keeps this environment's CPU build: the toolkit test).
    """
    from skiff.packaging.lock import Pin, closure, sha256, wheels_for

    code = out_dir / "endpoint-code"
    shutil.rmtree(code, ignore_errors=True)
    (code / "wheels").mkdir(parents=True)
    versions = closure(ENDPOINT_NEEDS, target.markers)
    if onnxruntime:
        name, _, version = onnxruntime.partition("==")
        del versions["onnxruntime"]
        versions[name] = version
    wheels = list(wheels_for([Pin(n, v) for n, v in sorted(versions.items())], target).values())
    # Built from a copy: setuptools leaves build/ and *.egg-info where it builds.
    source = out_dir / "skiff-source"
    shutil.rmtree(source, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("skiff", "training"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    shutil.rmtree(out_dir / "skiff-wheel", ignore_errors=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out_dir / "skiff-wheel"), str(source)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise SkiffError(f"expected pip to build skiff's wheel (got: {built.stderr.strip()[-800:]})")
    wheels += sorted((out_dir / "skiff-wheel").glob("skiff-*.whl"))
    lines = [
        "# The endpoint's packages, exactly, from the wheels beside this file and never from an",
        "# index: the endpoint runs network-isolated. The image's own torch and numpy stay.",
        "--no-index",
        "--find-links wheels",
    ]
    for wheel in wheels:
        shutil.copyfile(wheel, code / "wheels" / wheel.name)
        name, version = wheel.name.split("-")[:2]
        lines.append(Pin(name.replace("_", "-"), version, (sha256(wheel),)).line())
    (code / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (code / ENDPOINT_ENTRY).write_bytes(ENDPOINT_ENTRY_SOURCE)
    return code


def build_training_source(out_dir: Path, target: Target | None = IMAGE) -> Path:
    """``sourcedir.tar.gz`` for script mode: skiff/, training/, the locked wheels and requirements.txt.

    The job's toolkit runs ``pip install -r requirements.txt`` in the extracted folder; the file
    says ``--no-index`` and finds every package in ``wheels/`` beside it, each pinned and hashed,
    so the job installs exactly the lock and needs no network (it runs network-isolated).
    ``target`` chooses the wheels (the training image's Python by default); None leaves them
    out, for the local stack, whose executor runs training/ in this environment instead.
    """
    from skiff.packaging.lock import read_lock, wheels_for

    pins = read_lock()
    wheels = wheels_for(pins, target) if target is not None else {}
    lines = [
        "# The training job's packages, exactly as locked (training/requirements.lock), from the",
        "# wheels beside this file and never from an index: the job runs without network access.",
        "--no-index",
        "--find-links wheels",
        *(p.line() for p in pins),
    ]
    files = {f"wheels/{path.name}": path for path in wheels.values()}
    return _source_archive(out_dir / "sourcedir.tar.gz", ("skiff", "training"), lines, files=files)


def _source_archive(
    archive: Path,
    packages: Sequence[str],
    requirements: Sequence[str],
    extra: dict[str, bytes] | None = None,
    files: dict[str, Path] | None = None,
) -> Path:
    """A reproducible tar.gz of ``packages``' Python files, requirements.txt, ``extra`` contents and ``files``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    members: list[tuple[str, bytes | Path]] = [("requirements.txt", ("\n".join(requirements) + "\n").encode())]
    members += sorted((extra or {}).items())
    members += sorted((files or {}).items())
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            members.append((str(path.relative_to(ROOT)), path.read_bytes()))
    # Rebuilding ~100 MB of wheels into the same bytes takes seconds: reuse an archive of the same inputs.
    inputs = hashlib.sha256()
    for name, content in members:
        described = f"{content.stat().st_size}:{content.stat().st_mtime_ns}" if isinstance(content, Path) else content
        inputs.update(name.encode() + b"\0" + (described.encode() if isinstance(described, str) else described))
    stamp = archive.with_name(archive.name + ".inputs")
    if archive.is_file() and stamp.is_file() and stamp.read_text() == inputs.hexdigest():
        return archive
    # gzip stamps its own mtime unless told: 0 keeps the archive (and its deploy hash) reproducible.
    with (
        open(archive, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w") as tar,
    ):
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, 0o644  # fixed metadata: stable hash
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with open(content, "rb") as stream:
                    tar.addfile(info, stream)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    stamp.write_text(inputs.hexdigest())
    return archive


def build_all(
    out_dir: Path, architecture: str, functions: Sequence[str] = FUNCTIONS, bytecode: bool = True
) -> BundleReport:
    """Build the layer and every function for ``architecture``; raise if above a limit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BundleReport(architecture, build_layer(out_dir, architecture, bytecode=bytecode))
    for name in functions:
        report.functions[name] = build_function(out_dir, name, bytecode=bytecode)
    (out_dir / f"report-{architecture}.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    report.check_limits()
    return report
