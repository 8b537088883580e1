from __future__ import annotations

from typing import Any

import pytest

from skiff.errors import ConfigError
from skiff.model.hyperparameters import Hyperparameters


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


def _job_request(family: str) -> dict[str, Any]:
    from skiff.retrain.launch import TrainingJobSettings, training_job_request

    settings = TrainingJobSettings(
        job_prefix="p",
        role_arn="arn:aws:iam::1:role/r",
        image_uri="img",
        source_uri="s3://b/source/s.tar.gz",
        artifacts_bucket="b",
        hyperparameters=Hyperparameters(model_family=family),
        base_model_uri="s3://b/base-models/all-MiniLM-L6-v2/",
    )
    manifest = "s3://d/datasets/versions/ds-000001/channel.manifest"
    return training_job_request(settings, "ds-000001", manifest, "eu-west-1")


def test_transformer_jobs_get_torchrun_and_the_base_model_channel() -> None:
    request = _job_request("transformer")
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels["base_model"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://b/base-models/all-MiniLM-L6-v2/",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def test_bag_jobs_have_neither() -> None:
    request = _job_request("bag")
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train"]
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]
