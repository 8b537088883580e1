"""Upload → dataset version → training job → completion → quality gate, against moto."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions.training_events import handler as training_events
from functions.upload_trigger import handler as upload_trigger
from skiff.data.dataset import Example, read_csv, write_csv
from skiff.local.sagemaker import run_described_job
from skiff.registry.artifacts import parse_s3_uri
from skiff.registry.table import FAILED, REJECTED, Registry, create_table
from skiff.retrain.launch import TRAINING_LOG_GROUP, decode_sagemaker_hyperparameters
from tests.aws_fixtures import Subscriber, create_inference_function, function_code
from tests.events import sqs_s3_event, training_state_event
from tests.functions.test_inference import Context

TABLE, DATA, ARTIFACTS, PREFIX = "skiff-registry", "skiff-data", "skiff-artifacts", "skiff-test"
ROLE = "arn:aws:iam::123456789012:role/skiff-sagemaker"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd"
IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.10.0-gpu-py313"
GOOD = {"epochs": 3, "buckets": 4096, "embedding_dim": 16, "char_ngrams": "none"}
# Barely trained: it predicts the common label, so it scores about the majority baseline (with
# the bag's default balanced weights it would lean to the rare label and score below it).
BAD = {**GOOD, "epochs": 1, "learning_rate": 1e-6, "class_weighting": "none"}
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@dataclass
class Retraining:
    s3: Any
    sagemaker: Any
    registry: Registry
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def upload(self, name: str, content: bytes) -> tuple[str, int]:
        key = f"incoming/{name}"
        self.s3.put_object(Bucket=DATA, Key=key, Body=content)
        return key, len(content)

    def upload_multipart(self, name: str, content: bytes) -> tuple[str, int]:
        """As `aws s3 cp` sends a file of 8 MiB or more: a multipart upload (8 MiB parts)."""
        from boto3.s3.transfer import TransferConfig

        assert len(content) >= MULTIPART_THRESHOLD
        key, path = f"incoming/{name}", self.tmp / name
        path.write_bytes(content)
        self.s3.upload_file(str(path), DATA, key, Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD))
        assert "-" in self.s3.head_object(Bucket=DATA, Key=key)["ETag"]  # a multipart ETag: <md5>-<parts>
        return key, len(content)

    def trigger(self, *objects: tuple[str, int]) -> dict[str, Any]:
        return upload_trigger.lambda_handler(sqs_s3_event(DATA, list(objects)), Context())

    def jobs(self) -> list[str]:
        return sorted(j["TrainingJobName"] for j in self.sagemaker.list_training_jobs()["TrainingJobSummaries"])

    def run_job(self, name: str) -> dict[str, Any]:
        """Do what SageMaker would: train locally, upload model.tar.gz, return the event detail."""
        description = self.sagemaker.describe_training_job(TrainingJobName=name)
        return run_described_job(description, self.tmp / name)

    def complete(self, detail: dict[str, Any]) -> dict[str, Any]:
        return training_events.lambda_handler(training_state_event(detail), Context())

    def use_hyperparameters(self, values: dict[str, Any]) -> None:
        self.monkeypatch.setenv("SKIFF_HYPERPARAMETERS", json.dumps(values))
        upload_trigger.scheduler.cache_clear()
        training_events.completion.cache_clear()

    def objects(self, prefix: str) -> list[str]:
        return sorted(o["Key"] for o in self.s3.list_objects_v2(Bucket=DATA, Prefix=prefix).get("Contents", []))


@pytest.fixture
def retraining(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Retraining]:
    create_table(TABLE)
    s3 = boto3.client("s3")
    for bucket in (DATA, ARTIFACTS):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket=ARTIFACTS, Key="source/sourcedir.tar.gz", Body=b"source bundle")
    for name, value in {
        "SKIFF_REGISTRY_TABLE": TABLE,
        "SKIFF_DATA_BUCKET": DATA,
        "SKIFF_ARTIFACTS_BUCKET": ARTIFACTS,
        "SKIFF_JOB_PREFIX": PREFIX,
        "SKIFF_SAGEMAKER_ROLE_ARN": ROLE,
        "SKIFF_TRAINING_IMAGE_URI": IMAGE,
        "SKIFF_TRAINING_SOURCE_URI": f"s3://{ARTIFACTS}/source/sourcedir.tar.gz",
        "SKIFF_TRAINING_INSTANCE_TYPE": "ml.g5.xlarge",
        "SKIFF_KMS_KEY_ARN": KEY,
        "SKIFF_TRAINING_LOG_RETENTION_DAYS": "30",
        "SKIFF_TRAINING_MAX_RUNTIME_SECONDS": "1800",
        "SKIFF_TRAINING_MAX_WAIT_SECONDS": "3600",
        "SKIFF_HYPERPARAMETERS": json.dumps(GOOD),
        "SKIFF_WORK_DIR": str(tmp_path / "work"),
        "POWERTOOLS_METRICS_NAMESPACE": "SkiffTest",
    }.items():
        monkeypatch.setenv(name, value)
    upload_trigger.catalog.cache_clear()
    upload_trigger.scheduler.cache_clear()
    training_events.completion.cache_clear()
    training_events.notifier.cache_clear()
    yield Retraining(s3, boto3.client("sagemaker"), Registry(TABLE), tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def sms_parts(tmp_path_factory: pytest.TempPathFactory, sms_spam: Path) -> list[bytes]:
    """sms-spam's train.csv cut into 5 uploads of consecutive rows."""
    rows = read_csv(sms_spam / "train.csv").examples
    directory = tmp_path_factory.mktemp("parts")
    parts = []
    for i in range(5):
        path = directory / f"part{i}.csv"
        write_csv(path, rows[i * 892 : (i + 1) * 892])
        parts.append(path.read_bytes())
    return parts


def csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    buffer = io.StringIO()
    import csv

    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue().encode()


# ---- upload trigger ---------------------------------------------------------------------


def test_upload_starts_exactly_one_job_with_the_full_request(retraining: Retraining, sms_parts: list[bytes]) -> None:
    response = retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    assert response == {"batchItemFailures": []}
    assert retraining.jobs() == [f"{PREFIX}-ds-000001"]
    job = retraining.sagemaker.describe_training_job(TrainingJobName=f"{PREFIX}-ds-000001")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{ARTIFACTS}/checkpoints/{PREFIX}-ds-000001/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["OutputDataConfig"] == {"S3OutputPath": f"s3://{ARTIFACTS}/jobs/", "KmsKeyId": KEY}
    channel, code = job["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{DATA}/datasets/versions/ds-000001/channel.manifest"
    hyperparameters = job["HyperParameters"]
    assert json.loads(hyperparameters["sagemaker_program"]) == "training/train.py"
    # Network-isolated by default: the source arrives as the code channel, not fetched by the container.
    assert job["EnableNetworkIsolation"] is True
    assert code["ChannelName"] == "code"
    assert code["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{ARTIFACTS}/source/sourcedir.tar.gz"
    assert json.loads(hyperparameters["sagemaker_submit_directory"]) == "/opt/ml/input/data/code/sourcedir.tar.gz"
    assert decode_sagemaker_hyperparameters(hyperparameters)["epochs"] == "3"
    tags = {t["Key"]: t["Value"] for t in retraining.sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags == {"skiff:stack": PREFIX, "skiff:dataset-version": "ds-000001"}


def test_accepted_upload_becomes_a_content_addressed_part_and_a_version(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    assert retraining.objects("incoming/") == []
    (part,) = retraining.objects("datasets/parts/")
    manifest = json.loads(
        retraining.s3.get_object(Bucket=DATA, Key="datasets/versions/ds-000001/manifest.json")["Body"].read()
    )
    assert manifest["rows"] == 892 and manifest["parts"][0]["key"] == part
    assert sum(manifest["label_counts"].values()) == 892 and set(manifest["label_counts"]) == {"ham", "spam"}
    channel = json.loads(
        retraining.s3.get_object(Bucket=DATA, Key="datasets/versions/ds-000001/channel.manifest")["Body"].read()
    )
    assert channel == [{"prefix": f"s3://{DATA}/datasets/parts/"}, part.rsplit("/", 1)[1]]


def test_starting_a_job_gives_sagemakers_training_log_group_the_stacks_retention(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    (group,) = boto3.client("logs").describe_log_groups(logGroupNamePrefix=TRAINING_LOG_GROUP)["logGroups"]
    assert group["retentionInDays"] == 30


def test_a_retention_someone_chose_for_the_training_log_group_is_kept(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName=TRAINING_LOG_GROUP)
    logs.put_retention_policy(logGroupName=TRAINING_LOG_GROUP, retentionInDays=365)
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    assert logs.describe_log_groups(logGroupNamePrefix=TRAINING_LOG_GROUP)["logGroups"][0]["retentionInDays"] == 365
    assert retraining.jobs() == [f"{PREFIX}-ds-000001"]


def test_duplicate_event_starts_no_second_job(retraining: Retraining, sms_parts: list[bytes]) -> None:
    upload = retraining.upload("first.csv", sms_parts[0])
    retraining.trigger(upload)
    retraining.trigger(upload)  # SQS delivers at least once
    assert retraining.jobs() == [f"{PREFIX}-ds-000001"]


def test_identical_content_under_another_name_creates_no_new_version(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    retraining.trigger(retraining.upload("same-again.csv", sms_parts[0]))
    assert retraining.objects("datasets/versions/") == [
        "datasets/versions/ds-000001/channel.manifest",
        "datasets/versions/ds-000001/manifest.json",
    ]
    assert retraining.jobs() == [f"{PREFIX}-ds-000001"]


def test_url_encoded_keys_are_decoded(retraining: Retraining, sms_parts: list[bytes]) -> None:
    retraining.trigger(retraining.upload("team a/spam (1).csv", sms_parts[0]))
    assert retraining.jobs() == [f"{PREFIX}-ds-000001"]


def test_a_burst_trains_at_most_twice_and_loses_no_row(retraining: Retraining, sms_parts: list[bytes]) -> None:
    retraining.trigger(*(retraining.upload(f"burst{i}.csv", sms_parts[i]) for i in range(2)))
    assert retraining.jobs() == [f"{PREFIX}-ds-000002"]  # one batch, one job
    retraining.trigger(*(retraining.upload(f"burst{i}.csv", sms_parts[i]) for i in range(2, 5)))
    assert retraining.jobs() == [f"{PREFIX}-ds-000002"]  # waits: one job in flight
    outcome = retraining.complete(retraining.run_job(f"{PREFIX}-ds-000002"))
    assert outcome["next_job"] == f"{PREFIX}-ds-000005"
    assert retraining.jobs() == [f"{PREFIX}-ds-000002", f"{PREFIX}-ds-000005"]
    manifest = json.loads(
        retraining.s3.get_object(Bucket=DATA, Key="datasets/versions/ds-000005/manifest.json")["Body"].read()
    )
    assert manifest["rows"] == 5 * 892 and len(manifest["parts"]) == 5


BAD_FILES = {
    "not-utf8.csv": (b"text,label\ncaf\xe9,ham\nok,spam\n", "expected UTF-8 text"),
    "wrong-header.csv": (b"message,category\nhi,ham\nwin,spam\n", "expected header text,label"),
    "one-class.csv": (b"text,label\nhi,ham\nhello,ham\n", "expected at least 2 distinct labels"),
    "empty.csv": (b"", "expected header text,label (got: an empty file)"),
    "binary.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "expected UTF-8 text"),
    "empty-text.csv": (b"text,label\nhi,ham\n,spam\n", "empty text"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_quarantined_with_a_report_and_trains_nothing(retraining: Retraining, name: str) -> None:
    content, reason = BAD_FILES[name]
    response = retraining.trigger(retraining.upload(name, content))
    assert response == {"batchItemFailures": []}
    assert retraining.objects("quarantine/") == [f"quarantine/{name}"]
    assert retraining.s3.get_object(Bucket=DATA, Key=f"quarantine/{name}")["Body"].read() == content
    report = json.loads(retraining.s3.get_object(Bucket=DATA, Key=f"rejections/{name}.json")["Body"].read())
    assert reason in report["reason"] and report["problems"]
    assert retraining.objects("incoming/") == [] and retraining.jobs() == []


def test_a_non_empty_key_ending_in_a_slash_is_rejected_not_left_in_incoming(retraining: Retraining) -> None:
    retraining.trigger(retraining.upload("team/", b"text,label\nhi,ham\nwin,spam\n"))
    report = json.loads(retraining.s3.get_object(Bucket=DATA, Key="rejections/team.json")["Body"].read())
    assert report["reason"] == "expected a file name after the last '/' (got: a key ending in '/', 27 bytes)"
    assert retraining.objects("quarantine/") == ["quarantine/team"]
    assert retraining.objects("incoming/") == [] and retraining.jobs() == []


def test_an_empty_folder_marker_is_ignored(retraining: Retraining) -> None:
    assert retraining.trigger(retraining.upload("team/", b"")) == {"batchItemFailures": []}
    assert retraining.objects("quarantine/") == [] and retraining.jobs() == []


def test_no_log_line_quotes_uploaded_text(
    retraining: Retraining, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # A word no timestamp, process id or duration can contain (digits can: a CI run once found
    # "4111" inside a record's relativeCreated).
    secret = "my passphrase is quokka-zanzibar"
    caplog.set_level("INFO")  # the functions' level (botocore's DEBUG logs request bodies by design)
    headerless = f"{secret},ham\nsecond row,spam\n".encode()
    bad_row = f"text,label\nfine,ham\n{secret} " + "x" * 6000 + ",spam\n"
    retraining.trigger(retraining.upload("headerless.csv", headerless), retraining.upload("long.csv", bad_row.encode()))
    report = json.loads(retraining.s3.get_object(Bucket=DATA, Key="rejections/headerless.csv.json")["Body"].read())
    assert secret in json.dumps(report)  # the rejection report may quote the user's own data
    logged = capsys.readouterr()
    records = "\n".join(r.getMessage() + json.dumps(vars(r), default=str) for r in caplog.records)
    everything = logged.out + logged.err + records
    assert "rejected" in everything and secret not in everything and "quokka" not in everything


def test_oversize_file_is_refused_before_reading(retraining: Retraining, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIFF_MAX_UPLOAD_BYTES", "100")
    upload_trigger.catalog.cache_clear()
    retraining.trigger(retraining.upload("big.csv", csv_bytes([("x" * 60, "ham"), ("y" * 60, "spam")])))
    report = json.loads(retraining.s3.get_object(Bucket=DATA, Key="rejections/big.csv.json")["Body"].read())
    assert report["reason"].startswith("expected at most 100 bytes (got: ")
    assert retraining.jobs() == []


def test_row_problems_name_their_lines(retraining: Retraining) -> None:
    retraining.trigger(retraining.upload("rows.csv", b"text,label\nfine,ham\n,spam\nalso,\nok,spam\n"))
    report = json.loads(retraining.s3.get_object(Bucket=DATA, Key="rejections/rows.csv.json")["Body"].read())
    assert [(p["line"], p["message"]) for p in report["problems"]] == [(3, "empty text"), (4, "empty label")]


def test_formula_like_text_is_accepted_as_plain_text(retraining: Retraining) -> None:
    rows = [('=HYPERLINK("http://x","win")', "spam"), ("+44 call me", "ham"), ("@SUM(A1)", "ham")]
    retraining.trigger(retraining.upload("formulas.csv", csv_bytes(rows)))
    (part,) = retraining.objects("datasets/parts/")
    stored = read_csv_bytes(retraining.s3.get_object(Bucket=DATA, Key=part)["Body"].read())
    assert stored == [Example(t, label) for t, label in rows]


def read_csv_bytes(content: bytes) -> list[Example]:
    from skiff.data.dataset import iter_examples

    return list(iter_examples(io.BytesIO(content), "part.csv"))


# ---- completion and quality gate --------------------------------------------------------


def train_version(retraining: Retraining, content: bytes, name: str) -> dict[str, Any]:
    retraining.trigger(retraining.upload(name, content))
    job = retraining.jobs()[-1]
    return retraining.complete(retraining.run_job(job))


def test_first_good_model_is_promoted_with_lineage(retraining: Retraining, sms_parts: list[bytes]) -> None:
    outcome = train_version(retraining, sms_parts[0] + sms_parts[1].split(b"\r\n", 1)[1], "first.csv")
    assert outcome["status"] == "promoted" and "majority baseline" in outcome["reason"]
    production = retraining.registry.production()
    assert production is not None and production.version == outcome["version"]
    assert production.lineage["dataset_version"] == "ds-000001"
    assert production.lineage["training_job"] == f"{PREFIX}-ds-000001"
    assert production.lineage["hyperparameters"]["epochs"] == 3
    assert production.artifact_uri == f"s3://{ARTIFACTS}/models/{outcome['version']}/"


def test_a_version_distilled_from_production_reads_it_as_its_teacher_and_names_it_in_its_lineage(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    teacher = train_version(retraining, sms_parts[0], "first.csv")["version"]
    retraining.use_hyperparameters({**GOOD, "teacher_version": teacher, "distill_augment": 1})
    retraining.trigger(retraining.upload("second.csv", sms_parts[1]))
    job = retraining.sagemaker.describe_training_job(TrainingJobName=retraining.jobs()[-1])
    (channel,) = [c for c in job["InputDataConfig"] if c["ChannelName"] == "teacher"]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{ARTIFACTS}/models/{teacher}/"
    student = retraining.complete(retraining.run_job(job["TrainingJobName"]))
    lineage = retraining.registry.get(student["version"]).lineage
    assert lineage["teacher"] == {"version": teacher, "model_family": "bag"}
    assert lineage["hyperparameters"]["teacher_version"] == teacher


@pytest.mark.slow
def test_a_multipart_upload_trains_and_so_does_the_next_version(retraining: Retraining, sms_parts: list[bytes]) -> None:
    # ≈ 9 MiB, sent in 2 parts; long rows (each text padded with one long word) keep training short.
    rows = read_csv_bytes(sms_parts[0])
    padded = [(f"{e.text} {'z' * 2000}", e.label) for e in rows]
    big = csv_bytes(padded * (MULTIPART_THRESHOLD // len(csv_bytes(padded)) + 1))
    retraining.trigger(retraining.upload_multipart("big.csv", big))
    first = retraining.complete(retraining.run_job(retraining.jobs()[-1]))
    assert first["status"] == "promoted"
    second = train_version(retraining, sms_parts[1], "next.csv")  # ds-000002 holds the big part too
    assert second["status"] in ("promoted", "rejected") and second["version"] != first["version"]
    assert retraining.registry.get(second["version"]).lineage["dataset_version"] == "ds-000002"


def test_a_candidate_is_decided_even_when_production_cannot_be_loaded(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    first = train_version(retraining, sms_parts[0], "first.csv")
    production = retraining.registry.get(first["version"])
    bucket, prefix = parse_s3_uri(production.artifact_uri or "")
    retraining.s3.delete_object(Bucket=bucket, Key=f"{prefix}model.int8.onnx")
    second = train_version(retraining, sms_parts[1], "second.csv")
    assert second["status"] in ("promoted", "rejected")  # decided, not left a candidate
    assert f"production {first['version']} cannot be loaded" in second["reason"]
    assert f"its recorded accuracy {production.metrics['accuracy']:.4f}" in second["reason"]
    assert retraining.registry.get(second["version"]).status != "candidate"


def test_worse_candidate_is_rejected_and_production_stays(retraining: Retraining, sms_parts: list[bytes]) -> None:
    first = train_version(retraining, sms_parts[0], "first.csv")
    assert first["status"] == "promoted"
    retraining.use_hyperparameters(BAD)
    second = train_version(retraining, sms_parts[1], "second.csv")
    assert second["status"] == "rejected"
    assert retraining.registry.production_version() == first["version"]
    rejected = retraining.registry.get(second["version"])
    assert rejected.status == REJECTED and f"< production {first['version']}" in (rejected.status_reason or "")


def test_better_candidate_is_promoted(retraining: Retraining, sms_parts: list[bytes]) -> None:
    retraining.monkeypatch.setenv("SKIFF_GATE_BASELINE_MARGIN", "0")  # admit a weak first model
    retraining.use_hyperparameters(BAD)
    first = train_version(retraining, sms_parts[0], "first.csv")
    assert first["status"] == "promoted"
    retraining.use_hyperparameters(GOOD)
    second = train_version(retraining, sms_parts[1], "second.csv")
    assert second["status"] == "promoted" and f">= production {first['version']}" in second["reason"]
    assert retraining.registry.get(first["version"]).status == "retired"


def test_first_model_must_beat_the_majority_baseline_by_the_margin(
    retraining: Retraining, sms_parts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKIFF_GATE_BASELINE_MARGIN", "0.5")
    outcome = train_version(retraining, sms_parts[0], "first.csv")
    assert outcome["status"] == "rejected" and "majority baseline" in outcome["reason"]
    assert retraining.registry.production() is None


def test_failed_job_is_recorded_and_production_untouched(retraining: Retraining, sms_parts: list[bytes]) -> None:
    first = train_version(retraining, sms_parts[0], "first.csv")
    retraining.trigger(retraining.upload("second.csv", sms_parts[1]))
    job = retraining.jobs()[-1]
    detail = retraining.run_job(job)
    outcome = retraining.complete(
        {
            **detail,
            "TrainingJobStatus": "Failed",
            "FailureReason": "AlgorithmError: CUDA out of memory",
            "ModelArtifacts": None,
        }
    )
    assert outcome["status"] == "failed"
    failed = retraining.registry.get(outcome["version"])
    assert failed.status == FAILED and failed.status_reason == "training job failed: AlgorithmError: CUDA out of memory"
    assert retraining.registry.production_version() == first["version"]


def test_training_that_fails_inside_the_container_reports_its_reason(
    retraining: Retraining, sms_parts: list[bytes]
) -> None:
    retraining.use_hyperparameters({**GOOD, "eval_fraction": 1e-9})  # no row can land in the eval split
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    detail = retraining.run_job(retraining.jobs()[-1])
    assert detail["TrainingJobStatus"] == "Failed"
    outcome = retraining.complete(detail)
    assert outcome["status"] == "failed"
    assert "DatasetError" in outcome["reason"] and "non-empty evaluation split" in outcome["reason"]
    assert retraining.registry.production() is None


def test_a_rejected_candidate_is_notified_with_the_gate_decision(
    retraining: Retraining, sms_parts: list[bytes], monkeypatch: pytest.MonkeyPatch, subscriber: Subscriber
) -> None:
    monkeypatch.setenv("SKIFF_GATE_BASELINE_MARGIN", "0.5")
    outcome = train_version(retraining, sms_parts[0], "first.csv")
    (notification,) = subscriber.received()
    message = notification["Message"]
    assert message["event"] == "candidate-rejected" and message["version"] == outcome["version"]
    assert message["gate"]["reference"] == "majority-baseline" and message["reason"] == outcome["reason"]
    assert notification["Subject"].endswith("rejected by the quality gate; production unchanged")


def test_a_failed_job_is_notified_with_sagemakers_reason(
    retraining: Retraining, sms_parts: list[bytes], subscriber: Subscriber
) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    job = retraining.sagemaker.describe_training_job(TrainingJobName=retraining.jobs()[-1])
    retraining.complete({**job, "TrainingJobStatus": "Failed", "FailureReason": "CapacityError: no spot capacity"})
    (notification,) = subscriber.received()
    message = notification["Message"]
    assert (message["event"], message["training_job"]) == ("training-failed", f"{PREFIX}-ds-000001")
    assert "CapacityError: no spot capacity" in message["reason"]


def test_a_repeated_completion_event_notifies_nobody_again(
    retraining: Retraining, sms_parts: list[bytes], subscriber: Subscriber
) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    job = retraining.sagemaker.describe_training_job(TrainingJobName=retraining.jobs()[-1])
    failed = {**job, "TrainingJobStatus": "Failed", "FailureReason": "InternalServerError"}
    retraining.complete(failed)
    retraining.complete(failed)
    assert len(subscriber.received()) == 1


def test_an_endpoint_event_without_a_gpu_endpoint_is_ignored(retraining: Retraining) -> None:
    event = training_state_event({"EndpointName": "skiff-test-gpu", "EndpointStatus": "IN_SERVICE"}, False)
    event["detail-type"] = "SageMaker Endpoint State Change"
    outcome = training_events.lambda_handler(event, Context())
    assert outcome == {"state": "ignored", "reason": "this stack has no GPU endpoint"}


def test_duplicate_completion_event_changes_nothing(retraining: Retraining, sms_parts: list[bytes]) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    detail = retraining.run_job(retraining.jobs()[-1])
    first = retraining.complete(detail)
    again = retraining.complete(detail)
    assert (first["status"], again["status"]) == ("promoted", "duplicate")
    assert len(retraining.registry.list_versions()[0]) == 1
    assert len(retraining.registry.history()) == 1


def test_completed_event_without_model_artifacts_is_described(retraining: Retraining, sms_parts: list[bytes]) -> None:
    """The documented sample lacks ModelArtifacts; the handler asks SageMaker where the model is."""
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    job = retraining.jobs()[-1]
    detail = retraining.run_job(job)
    described = retraining.sagemaker.describe_training_job(TrainingJobName=job)["ModelArtifacts"]["S3ModelArtifacts"]
    assert described == detail["ModelArtifacts"]["S3ModelArtifacts"]  # SageMaker's own output layout
    outcome = retraining.complete({k: v for k, v in detail.items() if k != "ModelArtifacts"})
    assert outcome["status"] == "promoted"


def test_tampered_model_archive_fails_the_version(retraining: Retraining, sms_parts: list[bytes]) -> None:
    retraining.trigger(retraining.upload("first.csv", sms_parts[0]))
    detail = retraining.run_job(retraining.jobs()[-1])
    key = detail["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    archive = io.BytesIO(retraining.s3.get_object(Bucket=ARTIFACTS, Key=key)["Body"].read())
    rebuilt = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="r:gz") as source, tarfile.open(fileobj=rebuilt, mode="w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "labels.json":
                data = b'["spam", "ham"]'
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    retraining.s3.put_object(Bucket=ARTIFACTS, Key=key, Body=rebuilt.getvalue())
    outcome = retraining.complete(detail)
    assert outcome["status"] == "failed" and "labels.json" in outcome["reason"]
    assert retraining.registry.production() is None


def test_another_stacks_job_is_ignored(retraining: Retraining) -> None:
    outcome = retraining.complete({"TrainingJobName": "someone-else-ds-000001", "TrainingJobStatus": "Completed"})
    assert outcome["status"] == "ignored"


def test_in_progress_events_are_ignored(retraining: Retraining) -> None:
    outcome = retraining.complete({"TrainingJobName": f"{PREFIX}-ds-000001", "TrainingJobStatus": "InProgress"})
    assert outcome["status"] == "ignored"


def test_after_a_deployment_the_completion_function_publishes_production_again_with_the_new_code(
    retraining: Retraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the stack's post-deployment invocation (infra/stack.py) sets off: production, published
    before `pulumi up` changed the inference function's code, is published again and served."""
    from skiff.serve.lambda_alias import deployment_event

    inference = f"{PREFIX}-inference"
    create_inference_function(inference, TABLE)
    monkeypatch.setenv("SKIFF_INFERENCE_FUNCTION", inference)
    training_events.completion.cache_clear()
    version = retraining.registry.register(
        artifact_uri=f"s3://{ARTIFACTS}/models/x/", manifest_sha256="ab" * 32, metrics={}, lineage={}
    ).version
    retraining.registry.promote(version, "test")
    before = training_events.lambda_handler(deployment_event(PREFIX), Context())
    functions = boto3.client("lambda")
    functions.update_function_code(FunctionName=inference, ZipFile=function_code("# the new handler\n"))
    after = training_events.lambda_handler(deployment_event(PREFIX), Context())
    assert (before["state"], after["state"]) == ("moved", "moved")
    assert after["function_version"] != before["function_version"]
    alias = functions.get_alias(FunctionName=inference, Name="live")
    assert alias["FunctionVersion"] == after["function_version"]
    served = functions.get_function_configuration(FunctionName=inference, Qualifier=alias["FunctionVersion"])
    assert served["CodeSha256"] == functions.get_function_configuration(FunctionName=inference)["CodeSha256"]


def test_a_deployment_before_any_model_leaves_the_alias_alone(
    retraining: Retraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    from skiff.serve.lambda_alias import deployment_event

    inference = f"{PREFIX}-inference"
    create_inference_function(inference, TABLE)
    monkeypatch.setenv("SKIFF_INFERENCE_FUNCTION", inference)
    training_events.completion.cache_clear()
    outcome = training_events.lambda_handler(deployment_event(PREFIX), Context())
    assert outcome["state"] == "none"
    assert boto3.client("lambda").get_alias(FunctionName=inference, Name="live")["FunctionVersion"] == "$LATEST"
