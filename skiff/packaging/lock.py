"""The training job's package lock: every package the job installs, exact versions and hashes.

The SageMaker PyTorch training image brings Python, torch and numpy; the job's toolkit then
pip-installs the source bundle's ``requirements.txt``. A loose ``>=`` there lets a job land on
whatever was released last (onnxruntime 1.30.0's quantizer fails on every model; transformers
5 refuses torch < 2.6), and an index lookup needs a network the job should not have. So the
bundle carries the wheels of ``training/requirements.lock`` and installs them with no index:

- versions: the packages in TRAINING_NEEDS and everything they require, pinned to the versions
  installed in the environment the test suite runs in (``./dev`` installs with the lock as
  constraints, so those are the versions tested together);
- hashes: the sha256 of the wheel pip chooses for each target in TARGETS — the training image
  (the bundle ships those) and the Python the contract tests run the bundle with.

    .venv/bin/python -m skiff.packaging.lock          # rewrite training/requirements.lock (downloads wheels)
    .venv/bin/python -m skiff.packaging.lock --check  # exit 1 if its versions differ from this environment
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from skiff.errors import ConfigError, SkiffError

ROOT = Path(__file__).resolve().parents[2]
LOCK_PATH = ROOT / "training" / "requirements.lock"
WHEEL_CACHE = ROOT / "build" / "wheels"
"""Downloaded wheels, one folder per target; reused by later locks and bundles (offline rebuilds)."""

TRAINING_NEEDS = ("onnx", "onnxscript", "onnxruntime", "matplotlib", "transformers", "tokenizers")
"""What training/ imports beyond the image's own packages."""

IMAGE_PROVIDES = ("torch", "numpy")
"""Left to the image: reinstalling them could break its CUDA build of torch."""


@dataclass(frozen=True)
class Target:
    """A Python and platform that wheels are chosen for (``pip download --platform …``)."""

    name: str
    python_version: str  # "3.13"
    machine: str = "x86_64"
    glibc_minor: int = 35
    """Newest manylinux_2_N accepted: 35 is Ubuntu 22.04's glibc; newer systems run these wheels too."""

    @property
    def platforms(self) -> tuple[str, ...]:
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(self.glibc_minor, 16, -1)]
        return (*tags, f"manylinux2014_{self.machine}")

    @property
    def markers(self) -> dict[str, str]:
        """PEP 508 environment markers, to decide which conditional dependencies apply."""
        return {
            "python_version": self.python_version,
            "python_full_version": f"{self.python_version}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": self.machine,
            "os_name": "posix",
        }

    def supports(self, wheel: str) -> bool:
        """Whether pip on this target would install the wheel file named ``wheel``."""
        from packaging.tags import compatible_tags, cpython_tags
        from packaging.utils import parse_wheel_filename

        version = tuple(int(part) for part in self.python_version.split("."))
        platforms = self.platforms
        supported = {*cpython_tags(version, platforms=platforms), *compatible_tags(version, platforms=platforms)}
        return bool(parse_wheel_filename(wheel)[3] & supported)

    def pip_download_options(self) -> list[str]:
        return [
            "--only-binary=:all:",
            "--implementation=cp",
            f"--python-version={self.python_version}",
            *[f"--platform={tag}" for tag in self.platforms],
        ]


IMAGE = Target("image", "3.13")
"""The PyTorch training DLC 2.10 (py313, x86_64): what the source bundle ships wheels for."""

CONTRACT = Target("contract", "3.11")
"""The Python the contract tests (and CI) run the bundle through the real toolkit with."""

TARGETS = (IMAGE, CONTRACT)

ENDPOINT = Target("endpoint", "3.12")
"""The PyTorch inference DLC 2.6 (py312, x86_64; inference images stop at 2.6): the GPU
endpoint's code ships wheels for it (skiff.packaging.bundle.build_endpoint_code)."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...] = ()  # "sha256:<hex>", one per target wheel (pure wheels share one)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def line(self) -> str:
        return " ".join([self.requirement, *(f"--hash={h}" for h in self.hashes)])

    @classmethod
    def parse(cls, line: str) -> Pin:
        requirement, *options = line.split()
        name, separator, version = requirement.partition("==")
        bad = [o for o in options if not o.startswith("--hash=sha256:")]
        if not separator or not name or not version or bad:
            raise ConfigError(f"expected 'name==version --hash=sha256:…' in the lock (got: {line!r})")
        return cls(name, version, tuple(o.removeprefix("--hash=") for o in options))


def package_key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def closure(needs: Iterable[str], environment: Mapping[str, str] = IMAGE.markers) -> dict[str, str]:
    """Installed version of every package ``needs`` pulls in on ``environment``, minus the image's."""
    from packaging.requirements import Requirement

    pinned: dict[str, str] = {}
    pending = list(needs)
    while pending:
        name = package_key(pending.pop())
        if name in pinned or name in IMAGE_PROVIDES:
            continue
        try:
            found = distribution(name)
        except PackageNotFoundError as exc:
            raise ConfigError(f"expected {name} installed to lock it (got: not installed); run ./dev test") from exc
        pinned[name] = found.version
        for line in found.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
                pending.append(requirement.name)
    return dict(sorted(pinned.items()))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def wheels_for(pins: Sequence[Pin], target: Target, cache: Path = WHEEL_CACHE) -> dict[str, Path]:
    """The wheel of each pin for ``target``, by package name: from ``cache``, downloading what is missing.

    With hashes in the pins pip refuses any file whose sha256 is not listed (``--require-hashes``).
    """
    from packaging.utils import parse_wheel_filename

    folder = cache / target.name
    folder.mkdir(parents=True, exist_ok=True)

    def cached() -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(folder.glob("*.whl")):
            if target.supports(path.name):
                name, version, _, _ = parse_wheel_filename(path.name)
                found[f"{package_key(name)}=={version}"] = path
        return found

    wanted = {package_key(p.name): p for p in pins}
    have = cached()
    missing = [
        p
        for p in wanted.values()
        if p.requirement not in have or (p.hashes and sha256(have[p.requirement]) not in p.hashes)
    ]
    if missing:
        requirements = folder / "requirements.txt"
        requirements.write_text("".join(p.line() + "\n" for p in missing), encoding="utf-8")
        hashed = ["--require-hashes"] if all(p.hashes for p in missing) else []
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        command += [*hashed, *target.pip_download_options(), "--dest", str(folder), "-r", str(requirements)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SkiffError(
                f"expected pip to download the locked wheels for the {target.name} target "
                f"(Python {target.python_version}, {target.machine}) (got: {result.stderr.strip()[-800:]})"
            )
        have = cached()
    return {name: have[pin.requirement] for name, pin in wanted.items()}


def lock(needs: Iterable[str] = TRAINING_NEEDS, targets: Sequence[Target] = TARGETS) -> list[Pin]:
    """This environment's versions of ``needs`` and their dependencies, with each target's wheel hash."""
    pins = [Pin(name, version) for name, version in closure(needs).items()]
    hashes: dict[str, set[str]] = {p.name: set() for p in pins}
    for target in targets:
        for name, path in wheels_for(pins, target).items():
            hashes[name].add(sha256(path))
    return [Pin(p.name, p.version, tuple(sorted(hashes[p.name]))) for p in pins]


def render(pins: Sequence[Pin]) -> str:
    described = "; ".join(f"{t.name}: Python {t.python_version} on {t.machine}" for t in TARGETS)
    header = (
        "# The training job's packages, exactly (generated by: python -m skiff.packaging.lock).\n"
        f"# Hashes of the wheel chosen for each target ({described}).\n"
        f"# The image's own {', '.join(IMAGE_PROVIDES)} stay as they are.\n"
    )
    return header + "".join(p.line() + "\n" for p in pins)


def read_lock(path: Path = LOCK_PATH) -> list[Pin]:
    """The lock's pins."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [Pin.parse(line) for line in lines if line and not line.startswith("#")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare versions instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        locked = {p.name: p.version for p in read_lock()} if LOCK_PATH.is_file() else {}
        if locked != closure(TRAINING_NEEDS):
            print(f"{LOCK_PATH} differs from this environment; regenerate it", file=sys.stderr)
            return 1
        return 0
    LOCK_PATH.write_text(render(lock()), encoding="utf-8")
    print(f"wrote {LOCK_PATH} ({len(read_lock())} packages, wheels in {WHEEL_CACHE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
