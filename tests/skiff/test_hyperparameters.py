from __future__ import annotations

import pytest

from skiff.errors import ConfigError
from skiff.hyperparameters import Hyperparameters


def test_strings_round_trip_as_sagemaker_passes_them() -> None:
    hp = Hyperparameters(epochs=3, learning_rate=0.5, char_ngrams="none", mixed_precision=False)
    assert Hyperparameters.from_strings(hp.to_strings()) == hp
    assert all(isinstance(v, str) for v in hp.to_strings().values())


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"got unknown: \['epoch'\]"):
        Hyperparameters.from_strings({"epoch": "3"})


def test_wrong_type_names_the_value() -> None:
    with pytest.raises(ConfigError, match=r"hyperparameter epochs should be of type int \(got: 'three'\)"):
        Hyperparameters.from_strings({"epochs": "three"})


def test_out_of_range_value_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"batch_size should be >= 1 \(got: 0\)"):
        Hyperparameters(batch_size=0)


def test_char_ngram_range_is_parsed() -> None:
    assert Hyperparameters(char_ngrams="2-5").preprocessing().char_ngrams == (2, 5)
    assert Hyperparameters(char_ngrams="none").preprocessing().char_ngrams is None
    with pytest.raises(ConfigError, match=r"char_ngrams should look like '3-4'"):
        Hyperparameters(char_ngrams="three")
