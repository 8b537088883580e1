"""The GPU endpoint's model folder, loaded and answered by SageMaker's own inference toolkit.

The folder is laid out as the endpoint receives it (the version's artifact files plus the
``code/`` the stack uploads: inference.py, requirements.txt, wheels/). A virtualenv on top of
the PyTorch image stand-in gets ``sagemaker-pytorch-inference`` (the DLC's serving toolkit,
with its own copy of ``sagemaker-inference``) and ``torchserve`` from PyPI; a worker there
installs code/requirements.txt with the toolkit's own function, with no package index
reachable, then answers requests through the toolkit's HandlerService with TorchServe's
Context. The wheels are the contract target's (this Python, CPU onnxruntime); on AWS they are
the inference image's (Python 3.12, onnxruntime-gpu) — same layout, same requirements file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skiff.packaging.bundle import build_endpoint_code
from skiff.packaging.lock import CONTRACT
from tests.training.toolkit import UNREACHABLE_INDEX, Image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        f"{sys.version_info.major}.{sys.version_info.minor}" != CONTRACT.python_version,
        reason=f"the toolkit test builds wheels for Python {CONTRACT.python_version} (the contract target)",
    ),
]

INFERENCE_TOOLKIT = ("sagemaker-pytorch-inference==2.0.25", "torchserve==0.12.0")
WORKER = Path(__file__).with_name("endpoint_worker.py")


@pytest.fixture(scope="module")
def inference_image(pytorch_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image stand-in plus the inference toolkit (building the image may use an index)."""
    container = pytorch_image.container(tmp_path_factory.mktemp("inference-image") / "venv")
    run = subprocess.run(
        [str(container / "bin" / "python"), "-m", "pip", "install", "--quiet", *INFERENCE_TOOLKIT],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return container


@pytest.fixture(scope="module")
def model_folder(small_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt/ml as the endpoint sees it: the version's folder (artifact + code/) as model/."""
    base = tmp_path_factory.mktemp("opt-ml")
    shutil.copytree(small_artifact, base / "model")
    shutil.copytree(build_endpoint_code(tmp_path_factory.mktemp("endpoint"), CONTRACT, None), base / "model" / "code")
    return base


def serve(container: Path, base: Path, *bodies: str) -> tuple[list[dict], str]:
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_PROGRAM": "inference.py",  # what the model's Environment says
        "SKIFF_MODEL_VERSION": "v-endpoint-test",
        "PIP_INDEX_URL": UNREACHABLE_INDEX,  # the endpoint runs network-isolated
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)
    run = subprocess.run(
        [str(container / "bin" / "python"), str(WORKER), *bodies], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")], run.stderr


TEXTS = ["my parcel is late", "refund my invoice", "I cannot log in to my account", "ok"]


def test_endpoint_toolkit_installs_the_code_offline_loads_the_model_and_answers_as_the_lambda_does(
    inference_image: Path, model_folder: Path, small_artifact: Path
) -> None:
    from skiff.model.artifact import load_artifact
    from skiff.model.predictor import Predictor

    (answer,), _ = serve(inference_image, model_folder, json.dumps({"texts": TEXTS}))
    assert (answer["status"], answer["content_type"]) == (200, "application/json")
    body = json.loads(answer["body"])
    assert body["model_version"] == "v-endpoint-test"
    lambda_answers = Predictor(load_artifact(small_artifact)).predict(TEXTS)  # what the inference function runs
    assert [p["label"] for p in body["predictions"]] == [p.label for p in lambda_answers]
    assert [p["label"] for p in body["predictions"]][:2] == ["delivery", "billing"]
    for served, expected in zip(body["predictions"], lambda_answers, strict=True):
        assert served["scores"] == pytest.approx(expected.scores, abs=1e-6)


def test_endpoint_toolkit_answers_a_malformed_request_with_a_client_error(
    inference_image: Path, model_folder: Path
) -> None:
    (answer,), _ = serve(inference_image, model_folder, json.dumps({"texts": [1, 2]}))
    assert 400 <= answer["status"] < 500, answer
    assert "expected" in answer["body"]
