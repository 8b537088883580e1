from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from skiff.errors import ConfigError
from skiff.model.features import PADDING_ID, HashedNgramFeaturizer, HashedNgramSpec, featurizer_from_spec, tokenize

TEXTS = ["Free entry! Win £1000 now", "ok see you at 5", "ÉCOLE café naïve ｆｕｌｌｗｉｄｔｈ"]


def test_tokenize_splits_letters_digits_and_symbols() -> None:
    assert tokenize("Win £1000 NOW!") == ["win", "£", "1000", "now", "!"]


def test_normalization_folds_case_and_compatibility_forms() -> None:
    assert tokenize("ＦＵＬＬ Straße") == tokenize("full STRASSE")


def test_ids_are_identical_across_processes_with_different_hash_seeds() -> None:
    code = (
        "import json,sys; from skiff.model.features import HashedNgramFeaturizer as F;"
        f"print(json.dumps([F().ids(t) for t in {TEXTS!r}]))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.append(json.loads(run.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0] == [HashedNgramFeaturizer().ids(t) for t in TEXTS]


def test_ids_stay_within_buckets_and_never_use_padding() -> None:
    featurizer = HashedNgramFeaturizer(HashedNgramSpec(buckets=16))
    ids = featurizer.ids(TEXTS[0])
    assert ids and all(1 <= i <= 16 for i in ids)
    assert PADDING_ID not in ids


def test_word_bigrams_are_features_of_their_own() -> None:
    features = HashedNgramFeaturizer(HashedNgramSpec(char_ngrams=None)).features("free entry now")
    assert features == ["w1:free", "w1:entry", "w1:now", "w2:free entry", "w2:entry now"]


def test_char_ngrams_are_optional() -> None:
    with_chars = HashedNgramFeaturizer(HashedNgramSpec(char_ngrams=(3, 4))).features("hello")
    without = HashedNgramFeaturizer(HashedNgramSpec(char_ngrams=None)).features("hello")
    assert "c:<he" in with_chars and "c:hell" in with_chars
    assert not any(f.startswith("c:") for f in without)


def test_features_are_capped_at_max_features() -> None:
    featurizer = HashedNgramFeaturizer(HashedNgramSpec(max_features=5))
    assert len(featurizer.ids("one two three four five six seven")) == 5


def test_encode_pads_to_the_longest_text() -> None:
    matrix = HashedNgramFeaturizer().encode(["a b c", "a", ""])["token_ids"]
    assert matrix.shape[0] == 3 and matrix.dtype.name == "int64"
    assert (matrix[2] == PADDING_ID).all()
    assert (matrix[1] != PADDING_ID).sum() < (matrix[0] != PADDING_ID).sum()


def test_spec_round_trips_through_json() -> None:
    spec = HashedNgramSpec(buckets=1024, word_ngrams=3, char_ngrams=(2, 5), max_features=99)
    rebuilt = featurizer_from_spec(json.loads(json.dumps(spec.to_dict())))
    assert isinstance(rebuilt, HashedNgramFeaturizer) and rebuilt.spec == spec


def test_unknown_family_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(
        ConfigError, match=r"expected preprocessing family one of \['hashed-ngrams', 'hf-tokenizer'\] \(got: 'bpe'\)"
    ):
        featurizer_from_spec({"family": "bpe"})


def test_newer_spec_version_is_refused() -> None:
    spec = {**HashedNgramSpec().to_dict(), "version": 2}
    with pytest.raises(ConfigError, match=r"version 1 \(got: 2\)"):
        featurizer_from_spec(spec)


def test_invalid_bucket_count_names_the_value() -> None:
    with pytest.raises(ConfigError, match=r"buckets should be >= 2 \(got: 1\)"):
        HashedNgramSpec(buckets=1)
