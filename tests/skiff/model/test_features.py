from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skiff.errors import ConfigError
from skiff.model.features import (
    FOLDED,
    PADDING_ID,
    PLAIN,
    BucketRemap,
    HashedNgramFeaturizer,
    HashedNgramSpec,
    featurizer_from_spec,
    tokenize,
)

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
    spec = {**HashedNgramSpec().to_dict(), "version": 4}
    with pytest.raises(ConfigError, match=r"version one of \[1, 2, 3\] \(got: 4\)"):
        featurizer_from_spec(spec)


def test_pruned_remap_is_exact_kept_rows_in_order_others_to_one_zero_row() -> None:
    remap = BucketRemap(np.array([3, 7, 11], dtype=np.int64), buckets=12)
    ids = np.array([[7, 3, 11, 5, 12], [1, 0, 0, 0, 0]], dtype=np.int64)
    assert remap(ids).tolist() == [[2, 1, 3, 4, 4], [4, 0, 0, 0, 0]]
    assert (remap.rows, remap.unseen_row) == (5, 4)


def test_pruned_remap_with_nothing_kept_sends_every_bucket_to_the_zero_row() -> None:
    assert BucketRemap(np.array([], dtype=np.int64), buckets=8)(np.array([[5, 0]])).tolist() == [[1, 0]]


@pytest.mark.parametrize(("normalization", "version"), [(PLAIN, 2), (FOLDED, 3)])
def test_pruned_spec_round_trips_with_its_file(normalization: str, version: int, tmp_path: Path) -> None:
    featurizer = HashedNgramFeaturizer(HashedNgramSpec(buckets=64, normalization=normalization))
    remap = BucketRemap(np.array(sorted(set(featurizer.ids(TEXTS[0]))), dtype=np.int64), buckets=64)
    remap.save(tmp_path / "kept.npy")
    spec = featurizer.pruned(remap, "kept.npy").to_spec()
    assert (spec["version"], spec["kept_buckets_file"], spec["normalization"]) == (version, "kept.npy", normalization)
    rebuilt = featurizer_from_spec(json.loads(json.dumps(spec)), tmp_path)
    expected = remap(featurizer.encode(TEXTS)["token_ids"])
    assert (rebuilt.encode(TEXTS)["token_ids"] == expected).all()
    assert (expected[0] != remap.unseen_row).all() and (expected[1:] == remap.unseen_row).any()


def test_unpruned_plain_spec_stays_version_1_without_a_kept_file() -> None:
    spec = HashedNgramSpec(normalization=PLAIN).to_dict()
    assert spec["version"] == 1 and "kept_buckets_file" not in spec


def test_folded_spec_is_version_3_so_older_servers_refuse_it() -> None:
    spec = HashedNgramSpec().to_dict()
    assert (spec["version"], spec["normalization"]) == (3, FOLDED)
    assert HashedNgramSpec.from_dict(json.loads(json.dumps(spec))) == HashedNgramSpec()


def test_specs_before_version_3_keep_the_plain_normalization_they_were_trained_with() -> None:
    spec = {**HashedNgramSpec().to_dict(), "version": 1, "normalization": "NFKC+casefold"}
    featurizer = featurizer_from_spec(spec)
    assert featurizer.ids("caf\u00e9") != HashedNgramFeaturizer().ids("caf\u00e9")
    assert featurizer.ids("caf\u00e9") == HashedNgramFeaturizer(HashedNgramSpec(normalization=PLAIN)).ids("caf\u00e9")


def test_an_unknown_normalization_is_refused_naming_the_choices() -> None:
    spec = {**HashedNgramSpec().to_dict(), "normalization": "NFC"}
    with pytest.raises(ConfigError, match=r"normalization should be one of .*\(got: 'NFC'\)"):
        featurizer_from_spec(spec)


def test_folding_makes_curly_quotes_and_latin_accents_one_word_with_their_plain_forms() -> None:
    featurizer = HashedNgramFeaturizer()
    assert featurizer.ids("Don\u2019t miss the caf\u00e9 \u201cDEAL\u201d") == featurizer.ids(
        'don\'t miss the cafe "deal"'
    )
    plain = HashedNgramFeaturizer(HashedNgramSpec(normalization=PLAIN))
    assert plain.ids("caf\u00e9") != plain.ids("cafe")


def test_folding_keeps_the_marks_of_other_scripts() -> None:
    assert tokenize("\u0915\u094d\u0937") == tokenize(
        "\u0915\u094d\u0937", PLAIN
    )  # a Devanagari conjunct with its virama
    assert tokenize("\u00fcber") == ["uber"]


def test_pruned_spec_without_its_file_named_is_refused() -> None:
    spec = {**HashedNgramSpec().to_dict(), "version": 2}
    with pytest.raises(ConfigError, match=r"kept_buckets_file exactly in a version 2 .*got: version 2"):
        featurizer_from_spec(spec)


def test_pruned_kept_file_out_of_order_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    np.save(tmp_path / "kept.npy", np.array([9, 4], dtype=np.uint32))
    spec = {**HashedNgramSpec(buckets=16).to_dict(), "version": 2, "kept_buckets_file": "kept.npy"}
    with pytest.raises(ConfigError, match=r"ascending, distinct bucket ids in 1\.\.16 \(got: 2 ids from 4 to 9"):
        featurizer_from_spec(spec, tmp_path)


def test_pruned_kept_file_missing_is_named(tmp_path: Path) -> None:
    spec = {**HashedNgramSpec().to_dict(), "version": 2, "kept_buckets_file": "kept.npy"}
    with pytest.raises(ConfigError, match=r"expected the kept buckets file kept.npy .*got: missing"):
        featurizer_from_spec(spec, tmp_path)


def test_invalid_bucket_count_names_the_value() -> None:
    with pytest.raises(ConfigError, match=r"buckets should be >= 2 \(got: 1\)"):
        HashedNgramSpec(buckets=1)


@pytest.mark.parametrize(
    "spec",
    [
        HashedNgramSpec(),
        HashedNgramSpec(word_ngrams=3, char_ngrams=(2, 5), buckets=4096),
        HashedNgramSpec(char_ngrams=None),
        HashedNgramSpec(max_features=7),
    ],
    ids=["default", "wider", "words-only", "truncated"],
)
def test_ids_are_the_hashes_of_the_features_in_order(spec: HashedNgramSpec, sms_spam: Path) -> None:
    """ids() skips building feature strings; it must still give exactly their buckets, in order."""
    from skiff.data.dataset import read_csv
    from skiff.model.features import _bucket

    featurizer = HashedNgramFeaturizer(spec)
    texts = [example.text for example in read_csv(sms_spam / "test.csv").examples][:400] + TEXTS + ["", "a", "!!"]
    for text in texts:
        assert featurizer.ids(text) == [_bucket(f, spec.buckets) for f in featurizer.features(text)], text
