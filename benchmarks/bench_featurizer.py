"""Bag featurization per request, side by side: BLAKE2b text by text vs poly64 for the whole batch.

    .venv/bin/python benchmarks/bench_featurizer.py [--out benchmarks/results/featurizer.json]

Three paths, all with the job's default spec (``Hyperparameters().preprocessing()``) except the
hash:

- "blake2b, feature strings": what specs before version 4 did first: build every word and
  character n-gram string, hash each (BLAKE2b, per-feature cache).
- "blake2b, per-word cache": how versions 1-3 are served today: a word's character n-gram ids
  are hashed once per process.
- "poly64, vectorized": version 4 (the default): numpy hashes every n-gram of the batch at once;
  no cache, so new and seen texts cost the same. Training, and requests of more than 16 texts.
- "poly64, token cache": requests of at most 16 texts: a token's unigram and character n-gram
  ids and a word n-gram's id are computed once per process (misses in one numpy call).

Each starts with empty caches and first serves the first 500 sms-spam test texts (a container
that has been up a while); then it is timed, in one thread, on batches of 32 texts it has not
seen, batches of 16 it has not seen (other texts), one batch of 32 it has (50 runs), single
texts it has not seen (the rest) and the same single texts again. Each path's ids are
checked against its own one-feature-at-a-time definition (and tests/skiff/model/test_features.py
checks the whole test set).
"""

from __future__ import annotations

import argparse
import dataclasses
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
    spec = Hyperparameters().preprocessing()  # what the job trains with
    poly64 = features.HashedNgramFeaturizer(spec)
    blake2b = features.HashedNgramFeaturizer(dataclasses.replace(spec, hash=features.BLAKE2B))

    def feature_strings(batch: Sequence[str]) -> object:
        rows = [[features._bucket(f, spec.buckets) for f in blake2b.features(t)] for t in batch]
        return features.pad_ragged(
            features.np.array([i for r in rows for i in r], dtype=features.np.int64),
            features.np.array([len(r) for r in rows], dtype=features.np.int64),
        )

    def tokenized(batch: Sequence[str]) -> list[list[str]]:
        return [features.tokenize(t, spec.normalization) for t in batch]

    cache = features._Poly64TokenCache(spec)
    paths = {
        "blake2b, feature strings": (blake2b, feature_strings),
        "blake2b, per-word cache": (blake2b, lambda batch: blake2b.encode(batch)),
        "poly64, vectorized": (poly64, lambda batch: features.poly64_ids(tokenized(batch), spec).padded()),
        "poly64, token cache": (poly64, lambda batch: features.pad_ragged(*cache.ids(tokenized(batch)))),
    }
    rows = {}
    for name, (featurizer, run) in paths.items():
        features._bucket.cache_clear()
        features._char_ids.cache_clear()
        run(texts[:500])
        # Each measure on texts none before it saw (a cache would otherwise make them "seen").
        rows[name] = {
            "new_32_texts_p50_ms": round(timed_ms(run, [texts[i : i + 32] for i in range(500, 692, 32)]), 3),
            "new_16_texts_p50_ms": round(timed_ms(run, [texts[i : i + 16] for i in range(692, 852, 16)]), 3),
            "repeated_32_texts_p50_ms": round(timed_ms(run, [texts[:32]] * 50), 3),
            "new_1_text_p50_ms": round(timed_ms(run, [[t] for t in texts[852:]]), 3),
            "seen_1_text_p50_ms": round(timed_ms(run, [[t] for t in texts[852:]]), 3),
        }
        sample = texts[:200]
        values, counts = featurizer.ragged(sample)
        expected = [featurizer.bucket(f) for t in sample for f in featurizer.features(t)]
        assert values.tolist() == expected and counts.sum() == len(expected), name
    print(f"{'p50 ms':30}{'32 new':>9}{'32 seen':>9}{'16 new':>9}{'1 new':>9}{'1 seen':>9}")
    for name, row in rows.items():
        print(
            f"{name:30}{row['new_32_texts_p50_ms']:>9.3f}{row['repeated_32_texts_p50_ms']:>9.3f}"
            f"{row['new_16_texts_p50_ms']:>9.3f}{row['new_1_text_p50_ms']:>9.3f}{row['seen_1_text_p50_ms']:>9.3f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
