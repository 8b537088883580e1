from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from skiff.errors import ConfigError
from skiff.model.features import (
    BLAKE2B,
    FOLDED,
    PADDING_ID,
    PLAIN,
    POLY64,
    TOKEN_CACHE_MAX_TEXTS,
    BucketRemap,
    HashedNgramFeaturizer,
    HashedNgramSpec,
    featurizer_from_spec,
    pad_ragged,
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
    spec = {**HashedNgramSpec().to_dict(), "version": 5}
    with pytest.raises(ConfigError, match=r"version one of \[1, 2, 3, 4\] \(got: 5\)"):
        featurizer_from_spec(spec)


def test_pruned_remap_is_exact_kept_rows_in_order_others_to_one_zero_row() -> None:
    remap = BucketRemap(np.array([3, 7, 11], dtype=np.int64), buckets=12)
    ids = np.array([[7, 3, 11, 5, 12], [1, 0, 0, 0, 0]], dtype=np.int64)
    assert remap(ids).tolist() == [[2, 1, 3, 4, 4], [4, 0, 0, 0, 0]]
    assert (remap.rows, remap.unseen_row) == (5, 4)


def test_pruned_remap_with_nothing_kept_sends_every_bucket_to_the_zero_row() -> None:
    assert BucketRemap(np.array([], dtype=np.int64), buckets=8)(np.array([[5, 0]])).tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("normalization", "hash_name", "version"), [(PLAIN, BLAKE2B, 2), (FOLDED, BLAKE2B, 3), (FOLDED, POLY64, 4)]
)
def test_pruned_spec_round_trips_with_its_file(
    normalization: str, hash_name: str, version: int, tmp_path: Path
) -> None:
    featurizer = HashedNgramFeaturizer(HashedNgramSpec(buckets=64, normalization=normalization, hash=hash_name))
    remap = BucketRemap(np.array(sorted(set(featurizer.ids(TEXTS[0]))), dtype=np.int64), buckets=64)
    remap.save(tmp_path / "kept.npy")
    spec = featurizer.pruned(remap, "kept.npy").to_spec()
    assert (spec["version"], spec["kept_buckets_file"], spec["normalization"]) == (version, "kept.npy", normalization)
    rebuilt = featurizer_from_spec(json.loads(json.dumps(spec)), tmp_path)
    expected = remap(featurizer.encode(TEXTS)["token_ids"])
    assert (rebuilt.encode(TEXTS)["token_ids"] == expected).all()
    assert (expected[0] != remap.unseen_row).all() and (expected[1:] == remap.unseen_row).any()


def test_unpruned_plain_blake2b_spec_stays_version_1_without_a_kept_file() -> None:
    spec = HashedNgramSpec(normalization=PLAIN, hash=BLAKE2B).to_dict()
    assert spec["version"] == 1 and "kept_buckets_file" not in spec


def test_folded_blake2b_spec_is_version_3_so_older_servers_refuse_it() -> None:
    spec = HashedNgramSpec(hash=BLAKE2B).to_dict()
    assert (spec["version"], spec["normalization"]) == (3, FOLDED)
    assert HashedNgramSpec.from_dict(json.loads(json.dumps(spec))) == HashedNgramSpec(hash=BLAKE2B)


def test_default_spec_hashes_with_poly64_as_version_4_so_blake2b_servers_refuse_it() -> None:
    spec = HashedNgramSpec().to_dict()
    assert (spec["version"], spec["hash"], spec["normalization"]) == (4, POLY64, FOLDED)
    assert HashedNgramSpec.from_dict(json.loads(json.dumps(spec))) == HashedNgramSpec()


def test_specs_before_version_3_keep_the_plain_normalization_and_blake2b_they_were_trained_with() -> None:
    spec = {**HashedNgramSpec().to_dict(), "version": 1, "normalization": "NFKC+casefold", "hash": "blake2b-64"}
    featurizer = featurizer_from_spec(spec)
    trained_with = HashedNgramFeaturizer(HashedNgramSpec(normalization=PLAIN, hash=BLAKE2B))
    assert featurizer.ids("caf\u00e9") != HashedNgramFeaturizer().ids("caf\u00e9")
    assert featurizer.ids("caf\u00e9") == trained_with.ids("caf\u00e9")


def test_version_3_specs_keep_blake2b_whatever_the_hash_field_says() -> None:
    spec = {**HashedNgramSpec(hash=BLAKE2B).to_dict(), "hash": POLY64}
    assert HashedNgramSpec.from_dict(spec).hash == BLAKE2B


def test_an_unknown_hash_is_refused_naming_the_choices() -> None:
    spec = {**HashedNgramSpec().to_dict(), "hash": "md5"}
    with pytest.raises(ConfigError, match=r"hash should be one of \['blake2b-64', 'poly64'\] \(got: 'md5'\)"):
        featurizer_from_spec(spec)


def test_the_hashes_give_different_buckets_for_the_same_text() -> None:
    assert HashedNgramFeaturizer().ids(TEXTS[0]) != HashedNgramFeaturizer(HashedNgramSpec(hash=BLAKE2B)).ids(TEXTS[0])


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


SPECS = {
    "default": HashedNgramSpec(),
    "wider": HashedNgramSpec(word_ngrams=3, char_ngrams=(1, 5), buckets=4096),
    "words-only": HashedNgramSpec(char_ngrams=None),
    "unigrams": HashedNgramSpec(word_ngrams=1),
    "truncated": HashedNgramSpec(max_features=7),
}
ODD_TEXTS = ["", "a", "!!", "a\x00b", "\x00a", "lone \ud800 surrogate", "x" * 3000, " ".join(["w"] * 1500)]


@pytest.mark.parametrize("hash_name", [POLY64, BLAKE2B])
@pytest.mark.parametrize("name", list(SPECS))
def test_batch_ids_are_the_hashes_of_each_texts_features_in_order(name: str, hash_name: str, sms_spam: Path) -> None:
    """The whole test set featurized as one batch (numpy for POLY64) gives, text by text, exactly
    the bucket of each feature string by the readable one-feature definition, in order."""
    from skiff.data.dataset import read_csv

    featurizer = HashedNgramFeaturizer(replace(SPECS[name], hash=hash_name))
    texts = [example.text for example in read_csv(sms_spam / "test.csv").examples] + TEXTS + ODD_TEXTS
    if hash_name == BLAKE2B:
        texts = texts[:400] + TEXTS + ODD_TEXTS  # the per-text path; its cost is in the references
    values, counts = featurizer.ragged(texts)
    rows = np.split(values, np.cumsum(counts)[:-1])
    for text, row in zip(texts, rows, strict=True):
        assert row.tolist() == [featurizer.bucket(f) for f in featurizer.features(text)], text


@pytest.mark.parametrize("name", list(SPECS))
def test_a_texts_ids_do_not_depend_on_its_batch(name: str) -> None:
    featurizer = HashedNgramFeaturizer(SPECS[name])
    batch = [*TEXTS, *ODD_TEXTS]
    matrix = featurizer.encode(batch)["token_ids"]
    for row, text in zip(matrix, batch, strict=True):
        alone = featurizer.encode([text])["token_ids"][0]
        assert row[row != PADDING_ID].tolist() == alone[alone != PADDING_ID].tolist() == featurizer.ids(text)


@pytest.mark.parametrize("name", list(SPECS))
def test_served_ids_equal_training_ids_over_the_dev_set_with_a_cold_and_a_warm_token_cache(
    name: str, sms_spam: Path
) -> None:
    """encode() reuses earlier tokens' hashes for small requests; ragged() (training) hashes
    every text afresh. Batches of one text, of the cache's largest and of the API's largest."""
    from skiff.data.dataset import read_csv

    featurizer = HashedNgramFeaturizer(SPECS[name])
    texts = [example.text for example in read_csv(sms_spam / "test.csv").examples] + TEXTS + ODD_TEXTS
    batches = [texts[i : i + size] for size in (1, TOKEN_CACHE_MAX_TEXTS, 64) for i in range(0, len(texts), size)]
    for _ in ("cold", "warm"):
        for batch in batches:
            assert featurizer.encode(batch)["token_ids"].tolist() == pad_ragged(*featurizer.ragged(batch)).tolist()


def test_the_token_cache_starts_over_past_its_capacity_and_still_gives_the_same_ids(sms_spam: Path) -> None:
    from skiff.data.dataset import read_csv
    from skiff.model.features import _Poly64TokenCache

    featurizer = HashedNgramFeaturizer()
    small = _Poly64TokenCache(featurizer.spec, capacity=50)
    object.__setattr__(featurizer, "_tokens", small)
    texts = [example.text for example in read_csv(sms_spam / "test.csv").examples][:300]
    for text in texts:
        assert featurizer.encode([text])["token_ids"][0].tolist() == (featurizer.ids(text) or [PADDING_ID])
        assert len(small.tokens) <= 50 + len(set(tokenize(text))) and len(small.ngrams) <= 2 * 50 + len(text)


def test_poly64_bucket_names_kinds_and_lengths_apart() -> None:
    """A unigram, the character n-gram of the same letters and a bigram of the same words
    must not share a hash by construction (the salt holds kind and length)."""
    from skiff.model.features import poly64_bucket

    buckets = 1 << 30
    assert len({poly64_bucket(f, buckets) for f in ("w1:ab", "c:ab", "w2:a b", "c:<ab>", "w1:ba")}) == 5
