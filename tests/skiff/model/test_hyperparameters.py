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


def test_out_of_range_value_is_refused_with_the_range() -> None:
    with pytest.raises(ConfigError, match=r"batch_size should be between 1 and 65536 \(got: 0\)"):
        Hyperparameters(batch_size=0)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("epochs", "1000000000", r"epochs should be between 1 and 1000 \(got: 1000000000\)"),
        ("buckets", "99999999999", r"buckets should be between 2 and 16777216 \(got: 99999999999\)"),
        ("embedding_dim", "100000000", r"embedding_dim should be between 1 and 4096 \(got: 100000000\)"),
        ("learning_rate", "nan", r"learning_rate should be between 1e-07 and 1000 \(got: nan\)"),
        ("learning_rate", "inf", r"learning_rate should be between 1e-07 and 1000 \(got: inf\)"),
        ("dropout", "nan", r"dropout should be between 0 and 1 \(got: nan\)"),
        ("dropout", "1.0", r"dropout should be below 1 \(got: 1.0\)"),
        ("min_parity_agreement", "-0.5", r"min_parity_agreement should be between 0 and 1 \(got: -0.5\)"),
    ],
)
def test_unbounded_or_non_finite_values_are_refused_before_any_job(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Hyperparameters.from_strings({name: raw})


def test_a_table_too_large_to_train_is_refused_though_each_factor_is_in_range() -> None:
    with pytest.raises(ConfigError, match=r"buckets × embedding_dim should be at most 268,435,456"):
        Hyperparameters(buckets=1 << 24, embedding_dim=4096)


def test_the_stack_config_refuses_an_out_of_range_hyperparameter_at_preview() -> None:
    from infra.settings import StackSettings

    with pytest.raises(ConfigError, match=r"epochs should be between 1 and 1000"):
        StackSettings(prefix="skiff-test", hyperparameters={"epochs": 10**9})


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
    assert "base_model" not in [c["ChannelName"] for c in request["InputDataConfig"]]
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]


@pytest.mark.parametrize("raw", ["0", "1.5", "half", "nan"])
def test_prune_rows_other_than_auto_trained_or_a_share_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match=r'prune_rows should be "auto", "trained" or a share .*\(got: '):
        Hyperparameters(prune_rows=raw)


@pytest.mark.parametrize(("raw", "share"), [("auto", None), ("trained", 1.0), ("0.25", 0.25)])
def test_prune_rows_names_the_share_of_trained_rows_kept(raw: str, share: float | None) -> None:
    assert Hyperparameters(prune_rows=raw).prune_share() == share


def test_an_unknown_calibration_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"calibration should be one of \['temperature', 'none'\] \(got: 'platt'\)"):
        Hyperparameters(calibration="platt")


def test_an_unknown_bag_head_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"bag_head should be one of \['linear', 'embedding'\] \(got: 'deep'\)"):
        Hyperparameters(bag_head="deep")


@pytest.mark.parametrize(
    ("family", "head", "epochs", "learning_rate"),
    [("bag", "linear", 10, 30.0), ("bag", "embedding", 10, 0.02), ("transformer", "linear", 3, 5e-5)],
)
def test_defaults_follow_the_family_and_the_bag_head(family: str, head: str, epochs: int, learning_rate: float) -> None:
    hp = Hyperparameters(model_family=family, bag_head=head)
    assert (hp.epochs, hp.learning_rate) == (epochs, learning_rate)


def test_a_given_learning_rate_wins_over_the_heads_default() -> None:
    assert Hyperparameters(bag_head="embedding", learning_rate=0.5).learning_rate == 0.5


def test_with_changes_resolves_the_new_familys_defaults() -> None:
    transformer = Hyperparameters().with_changes(model_family="transformer")
    expected = Hyperparameters(model_family="transformer")
    assert (transformer.epochs, transformer.learning_rate, transformer.lr_schedule) == (
        expected.epochs,
        expected.learning_rate,
        expected.lr_schedule,
    )


def test_with_changes_keeps_what_was_given() -> None:
    assert Hyperparameters(learning_rate=3.0).with_changes(model_family="transformer").learning_rate == 3.0


def test_with_changes_gives_a_student_its_unweighted_default() -> None:
    assert Hyperparameters().with_changes(teacher_version="v-teacher").class_weighting == "none"


def test_with_changes_refuses_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match="got unknown: \\['epoch'\\]"):
        Hyperparameters().with_changes(epoch=3)


def test_the_resolved_fields_stay_out_of_the_job_strings() -> None:
    assert "_resolved_fields" not in Hyperparameters().to_strings()
    assert Hyperparameters.from_strings(Hyperparameters().to_strings()) == Hyperparameters()
