"""A training job run the way the PyTorch training image runs it: SageMaker's own toolkit, from PyPI.

The image is Python + torch + numpy + ``sagemaker-training`` + ``sagemaker-pytorch-training``
(the framework module the DLC names in ``SAGEMAKER_TRAINING_MODULE``). ``Image`` builds that
once per session in a virtualenv (this is the step that may use a package index, like building
the image). Each job then gets a fresh ``container``: a virtualenv that sees the image's
packages through a ``.pth`` file and installs into its own site-packages, so what one job
installs never hides what the next one lacks. The job runs ``train`` (the toolkit's entry) with
``SAGEMAKER_BASE_DIR`` standing in for /opt/ml, laid out from a real ``create_training_job``
request (hyperparameters, channels, resources), and no package index reachable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

TOOLKIT = ("sagemaker-training==5.1.4", "sagemaker-pytorch-training==3.0.0")
FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"  # what the PyTorch DLCs set
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"  # the discard port: nothing answers
OPT_ML = "/opt/ml"


def _site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / relative


@dataclass(frozen=True)
class Image:
    venv: Path

    @classmethod
    def build(cls, directory: Path) -> Image:
        """torch and numpy at this environment's versions, and the toolkit, in a new virtualenv."""
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
        packages = [f"torch=={version('torch').split('+')[0]}", f"numpy=={version('numpy')}", *TOOLKIT]
        run = subprocess.run(
            [str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return cls(directory)

    def container(self, directory: Path) -> Path:
        """A fresh virtualenv on top of the image: its own site-packages first, then the image's."""
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
        (_site_packages(directory) / "image.pth").write_text(str(_site_packages(self.venv)) + "\n")
        python = directory / "bin" / "python"
        # The image's console scripts, run by this container's Python.
        for name, target in (("train", "sagemaker_training.cli.train"), ("torchrun", "torch.distributed.run")):
            script = directory / "bin" / name
            script.write_text(f"#!{python}\nimport sys\nfrom {target} import main\nsys.exit(main())\n")
            script.chmod(0o755)
        return directory


@dataclass(frozen=True)
class JobRun:
    returncode: int
    base: Path
    log: str

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.is_file() else None


def run_job(container: Path, base: Path, request: Mapping[str, Any], channels: Mapping[str, Path]) -> JobRun:
    """Lay ``base`` out as SageMaker would for ``request`` (with ``channels``' data) and run the toolkit."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    hyperparameters = {
        name: json.dumps(json.loads(value).replace(OPT_ML, str(base))) if OPT_ML in value else value
        for name, value in request["HyperParameters"].items()
    }
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                c["ChannelName"]: {
                    "TrainingInputMode": c.get("InputMode", "File"),
                    "S3DistributionType": c["DataSource"]["S3DataSource"]["S3DataDistributionType"],
                    "RecordWrapperType": "None",
                }
                for c in request["InputDataConfig"]
            }
        )
    )
    resources = request["ResourceConfig"]
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": "localhost",  # resolvable here: the toolkit waits for DNS on each host
                "hosts": ["localhost"],
                "network_interface_name": "lo",
                "current_instance_type": resources["InstanceType"],
                "current_group_name": "homogeneousCluster",
                "instance_groups": [
                    {
                        "instance_group_name": "homogeneousCluster",
                        "instance_type": resources["InstanceType"],
                        "hosts": ["localhost"],
                    }
                ],
            }
        )
    )
    for name in (c["ChannelName"] for c in request["InputDataConfig"]):
        source, target = channels[name], base / "input" / "data" / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir(parents=True)
            shutil.copy(source, target / source.name)
    for folder in ("model", "output/data", "code"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    environment = {
        "PATH": f"{container / 'bin'}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(base)),
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_TRAINING_MODULE": FRAMEWORK_MODULE,
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        "PIP_CONFIG_FILE": os.devnull,  # no machine-wide find-links: the image has none
        "PIP_INDEX_URL": UNREACHABLE_INDEX,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "OMP_NUM_THREADS": "1",
        **request.get("Environment", {}),
    }
    run = subprocess.run(
        [str(container / "bin" / "train")], capture_output=True, text=True, env=environment, cwd=base, timeout=900
    )
    return JobRun(run.returncode, base, run.stdout + run.stderr)
