"""Upload -> new version serving, on the embedded local stack, with sms-spam and default settings.

    .venv/bin/python benchmarks/bench_local.py [--out benchmarks/results/local.json]

Times, from the moment the upload's PUT returns: accepted (validated, dataset version made),
the training job finished, and the first predict answered by the new version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "local.json"))
    args = parser.parse_args()

    from skiff.cli.client import ApiError, StackClient, StackOutputs
    from skiff.local.stack import LocalStack, LocalStackConfig

    work = Path(tempfile.mkdtemp(prefix="skiff-bench-local-"))
    runs = []
    with LocalStack(LocalStackConfig(work_dir=work)) as stack:
        client = StackClient(StackOutputs.from_dict(stack.outputs(), "local stack"))
        for path in (SMS / "train.csv", SMS / "test.csv"):
            began = time.perf_counter()
            upload = client.upload(path)
            outcome = client.upload_outcome(upload)
            accepted = time.perf_counter() - began
            model = client.wait_for_job(outcome["dataset_version"], timeout=300)
            trained = time.perf_counter() - began
            serving = None
            if model["status"] == "production":
                while serving is None:
                    try:
                        if client.predict(["hello"])["model_version"] == model["version"]:
                            serving = time.perf_counter() - began
                    except ApiError:
                        pass
                    time.sleep(0.05)
            runs.append(
                {
                    "upload": path.name,
                    "rows_in_dataset": outcome["rows"],
                    "dataset_version": outcome["dataset_version"],
                    "accepted_s": accepted,
                    "job_done_and_gated_s": trained,
                    "new_version_serving_s": serving,
                    "gate": model["status"],
                    "accuracy": model["metrics"].get("accuracy"),
                }
            )
        assert stack.errors == [], stack.errors
    result = {"machine": machine(), "command": "python benchmarks/bench_local.py", "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
