"""Promote/rollback under load on the embedded local stack: failed requests and stale answers.

    .venv/bin/python benchmarks/bench_switching.py [--switches 10] [--clients 4]
                                                  [--out benchmarks/results/switching.json]

Two versions are trained from sms-spam (train.csv in two parts, as uploads). Then ``--clients``
threads send /predict without pause while the main thread switches production ``--switches``
times (rollback, promote, rollback, ...) through the registry API, as `skiff rollback` and
`skiff promote` do. Every answer is kept with the time its request was sent. An answer is
*stale* when its request was sent after a switch had returned (and before the next began) but
names another version than that switch's: in-flight requests are not counted.

Side by side in one run, the two ways a stack can serve:
- ``published``: the alias follows production to a published version bound to the model
  (skiff/serve/lambda_alias.py): what the stack deploys now;
- ``registry-polling``: the alias stays on $LATEST, whose containers ask the registry at most
  every alias_ttl_seconds (2 s here, 5 s deployed): what it deployed before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402


def run(mode: str, parts: list[Path], switches: int, clients: int) -> dict[str, Any]:
    from skiff.cli.client import ApiError, StackClient, StackOutputs
    from skiff.local.stack import LocalStack, LocalStackConfig

    config = LocalStackConfig(
        work_dir=Path(tempfile.mkdtemp(prefix=f"skiff-bench-switching-{mode}-")),
        alias_ttl_seconds=2.0,
        published_versions=mode == "published",
    )
    with LocalStack(config) as stack:
        client = StackClient(StackOutputs.from_dict(stack.outputs(), "local stack"))
        versions = []
        for part in parts:
            outcome = client.upload_outcome(client.upload(part))
            model = client.wait_for_job(outcome["dataset_version"], timeout=600)
            versions.append(model["version"])
        if client.production()["production"]["version"] != versions[-1]:
            client.promote(versions[-1], "bench: the newer version serves first")
        time.sleep(config.alias_ttl_seconds + 0.5)  # every mode starts settled on the newer version

        answers: list[tuple[float, float, int, str | None]] = []  # sent, answered, status, version
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    version = client.predict(["Are we still meeting for lunch tomorrow?"])["model_version"]
                    status = 200
                except ApiError as exc:
                    version, status = None, exc.status
                answers.append((sent, time.monotonic(), status, version))

        workers = [threading.Thread(target=load) for _ in range(clients)]
        for worker in workers:
            worker.start()
        windows: list[tuple[float, float, str]] = []  # switch began, returned, the version it made serve
        try:
            time.sleep(1.0)
            for i in range(switches):
                began = time.monotonic()
                if i % 2 == 0:
                    target = client.rollback(f"bench: switch {i + 1}")["version"]
                else:
                    target = client.promote(versions[-1], f"bench: switch {i + 1}")["version"]
                windows.append((began, time.monotonic(), target))
                time.sleep(3.0)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        ended = time.monotonic()

    stale, stale_for = 0, []
    for i, (_, returned, target) in enumerate(windows):
        until = windows[i + 1][0] if i + 1 < len(windows) else ended
        late = [a for a in answers if returned <= a[0] < until and a[2] == 200 and a[3] != target]
        stale += len(late)
        if late:
            stale_for.append(max(a[0] for a in late) - returned)
    latencies = sorted((a[1] - a[0]) * 1000 for a in answers if a[2] == 200)
    return {
        "mode": mode,
        "requests": len(answers),
        "failed": sum(1 for a in answers if a[2] != 200),
        "stale_answers": stale,
        "stale_share_after_switches": stale / max(1, sum(1 for a in answers if a[0] >= windows[0][1])),
        "longest_stale_s": max(stale_for, default=0.0),
        "switch_call_ms_p50": statistics.median((r - b) * 1000 for b, r, _ in windows),
        "predict_ms_p50": statistics.median(latencies),
        "predict_ms_p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "switching.json"))
    args = parser.parse_args()

    from skiff.data.dataset import read_csv, write_csv

    rows = read_csv(SMS / "train.csv").examples
    parts = []
    directory = Path(tempfile.mkdtemp(prefix="skiff-bench-switching-data-"))
    for i, (start, end) in enumerate(((0, 2000), (2000, len(rows)))):
        parts.append(directory / f"sms-{i}.csv")
        write_csv(parts[-1], rows[start:end])

    results = [run(mode, parts, args.switches, args.clients) for mode in ("published", "registry-polling")]
    print(
        f"{'mode':<18} {'requests':>8} {'failed':>6} {'stale':>6} {'stale %':>8} {'longest':>8} "
        f"{'switch p50':>10} {'predict p50/p99':>16}"
    )
    for r in results:
        print(
            f"{r['mode']:<18} {r['requests']:>8} {r['failed']:>6} {r['stale_answers']:>6} "
            f"{100 * r['stale_share_after_switches']:>7.1f}% {r['longest_stale_s']:>7.2f}s "
            f"{r['switch_call_ms_p50']:>8.0f}ms {r['predict_ms_p50']:>7.1f}/{r['predict_ms_p99']:.1f} ms"
        )
    record = {"machine": machine(), "switches": args.switches, "clients": args.clients, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
