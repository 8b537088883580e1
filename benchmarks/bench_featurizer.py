"""Bag featurization per request, side by side: hashing every feature string vs per-word caching.

    .venv/bin/python benchmarks/bench_featurizer.py [--out benchmarks/results/featurizer.json]

Both produce the same ids (tests/skiff/model/test_features.py checks it on sms-spam). The
"feature strings" path is what ``HashedNgramFeaturizer.ids`` did before: build every word and
character n-gram string, then look each up in the per-feature hash cache. The shipped path
hashes a word's character n-grams once per process. Each starts with empty caches, serves the
first 800 sms-spam test texts (a container that has been up a while), then is timed on batches
of 32 texts it has not seen and on one batch of 32 it has, in one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, SMS, machine  # noqa: E402


def timed_ms(run: Callable[[Sequence[str]], object], batches: Sequence[Sequence[str]]) -> float:
    samples = []
    for batch in batches:
        began = time.perf_counter()
        run(batch)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def main() -> None:
    from skiff.data.dataset import read_csv
    from skiff.model import features
    from skiff.model.hyperparameters import Hyperparameters

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "featurizer.json"))
    args = parser.parse_args()
    texts = [example.text for example in read_csv(SMS / "test.csv").examples]
    featurizer = features.HashedNgramFeaturizer(Hyperparameters().preprocessing())  # what the job trains with
    buckets = featurizer.spec.buckets

    def feature_strings(batch: Sequence[str]) -> list[list[int]]:
        return [[features._bucket(f, buckets) for f in featurizer.features(t)] for t in batch]

    def per_word_cache(batch: Sequence[str]) -> list[list[int]]:
        return [featurizer.ids(t) for t in batch]

    rows = {}
    for name, run in (("feature strings", feature_strings), ("per-word cache (shipped)", per_word_cache)):
        features._bucket.cache_clear()
        features._char_ids.cache_clear()
        run(texts[:800])
        unseen = [texts[i : i + 32] for i in range(800, len(texts) - 32, 32)]
        rows[name] = {
            "new_32_texts_p50_ms": round(timed_ms(run, unseen), 3),
            "repeated_32_texts_p50_ms": round(timed_ms(run, [texts[:32]] * 50), 3),
        }
    assert feature_strings(texts[:200]) == per_word_cache(texts[:200])
    print(f"{'':28}{'32 new texts p50 ms':>22}{'32 seen texts p50 ms':>22}")
    for name, row in rows.items():
        print(f"{name:28}{row['new_32_texts_p50_ms']:>22.2f}{row['repeated_32_texts_p50_ms']:>22.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
