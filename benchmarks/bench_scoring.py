"""`skiff predict --file` on 5,000 sms-spam rows: through the local stack's API and offline.

    .venv/bin/python benchmarks/bench_scoring.py [--out benchmarks/results/scoring.json]

Starts the embedded local stack, uploads train.csv, waits until the default model serves, then
scores the first 5,000 rows of train.csv + test.csv twice in one run: through the API
(`skiff predict --stack … --file`, batches of 64, what a deployed stack's caller does; here
the HTTP front and handler run on this machine) and offline (`--model DIR`, onnxruntime in the
CLI's process). Prints and records rows/s for each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SMS, machine  # noqa: E402

ROWS = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scoring.json")
    args = parser.parse_args()

    from skiff.cli.client import StackClient, StackOutputs
    from skiff.cli.main import main as skiff
    from skiff.data.dataset import read_csv, write_csv
    from skiff.local.stack import LocalStack, LocalStackConfig

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = (read_csv(SMS / "train.csv").examples + read_csv(SMS / "test.csv").examples)[:ROWS]
        source = work / "texts.csv"
        write_csv(source, rows)
        with LocalStack(LocalStackConfig(work_dir=work / "stack")) as stack:
            outputs = work / "outputs.json"
            outputs.write_text(json.dumps(stack.outputs()))
            client = StackClient(StackOutputs.load(str(outputs)))
            outcome = client.upload_outcome(client.upload(SMS / "train.csv"))
            model = client.wait_for_job(outcome["dataset_version"], timeout=600)
            assert model["status"] == "production", model
            model_dir = work / "model"
            stack_args = ["--stack", str(outputs)]
            for name, how in (("api", stack_args), ("offline", ["--model", str(_fetch(model, model_dir))])):
                report = work / f"{name}.json"
                with report.open("w") as captured:
                    sys.stdout, saved = captured, sys.stdout
                    try:
                        code = skiff(
                            ["predict", *how, "--file", str(source), "--out", str(work / f"{name}.csv"), "--json"]
                        )
                    finally:
                        sys.stdout = saved
                assert code == 0
                results[name] = json.loads(report.read_text().splitlines()[-1])  # handler logs come first
                print(
                    f"{name}: {results[name]['scored']} rows in {results[name]['seconds']:.2f} s, "
                    f"{results[name]['rows_per_second']:.0f} rows/s",
                    flush=True,
                )
    record = {"machine": machine(), "rows": ROWS, "batch_size": 64, "model_version": model["version"], **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(machine())


def _fetch(model: dict, target: Path) -> Path:
    from skiff.model.artifact import SERVING_FILES
    from skiff.registry.artifacts import ArtifactStore, parse_s3_uri

    bucket, _ = parse_s3_uri(model["artifact_uri"])
    ArtifactStore(bucket).fetch(model["artifact_uri"], target, only=SERVING_FILES)
    return target


if __name__ == "__main__":
    main()
