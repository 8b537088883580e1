"""Talking to a running Skiff stack — the local one or a deployed one — the same way.

A stack is known by its outputs (``pulumi stack output --json`` for a deployed stack; the
local stack writes the same keys). Data goes in through S3 exactly as a user's own upload
would; models, promotion and rollback go through the registry API; predictions through the
inference API. Requests to a deployed stack are signed with SigV4 (the admin routes are
IAM-authorized); the local stack needs no signature.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff.aws import client
from skiff.errors import ConfigError, NotFoundError, SkiffError
from skiff.retrain.launch import dataset_version_of

REQUIRED_OUTPUTS = ("api_url", "data_bucket", "artifacts_bucket", "registry_table", "job_prefix")


def skiff_home() -> Path:
    return Path(os.environ.get("SKIFF_HOME") or Path.home() / ".skiff")


def local_state_path() -> Path:
    return skiff_home() / "local" / "state.json"


@dataclass(frozen=True)
class StackOutputs:
    api_url: str
    data_bucket: str
    artifacts_bucket: str
    registry_table: str
    job_prefix: str
    aws_endpoint_url: str | None = None  # set for the local stack only
    region: str | None = None
    progress_file: str | None = None  # the local training executor's job progress
    notifications_topic_arn: str | None = None
    notifications_file: str | None = None  # the local stack's stand-in for an e-mail inbox

    @property
    def is_local(self) -> bool:
        return self.aws_endpoint_url is not None

    def signing_region(self, explicit: str | None = None) -> tuple[str, str]:
        """The region to sign for, and where it came from: ``--region``, the outputs, the API's
        host (``<id>.execute-api.<region>.amazonaws.com``), the AWS configuration, or us-east-1."""
        if explicit:
            return explicit, "--region"
        if self.region:
            return self.region, "the stack outputs"
        host = urllib.parse.urlparse(self.api_url).hostname or ""
        match = re.fullmatch(r"[^.]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?", host)
        if match:
            return match.group(1), "the API's host name"
        import boto3

        configured = boto3.session.Session().region_name
        if configured:
            return configured, "the AWS configuration"
        return "us-east-1", "the default (no region found anywhere)"

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> StackOutputs:
        missing = [k for k in REQUIRED_OUTPUTS if not values.get(k)]
        if missing:
            raise ConfigError(f"expected stack outputs {missing} in {source} (got: {sorted(values)})")
        return cls(**{k: values.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @classmethod
    def load(cls, stack_file: str | None = None) -> StackOutputs:
        """``--stack FILE`` (Pulumi outputs JSON) wins; otherwise the running local stack."""
        if stack_file:
            path = Path(stack_file)
            if not path.is_file():
                raise ConfigError(
                    f"expected a stack outputs file at {path} (got: none); "
                    "write one with: pulumi stack output --json > outputs.json"
                )
            return cls.from_dict(json.loads(path.read_text()), str(path))
        state = local_state_path()
        if not state.is_file():
            raise ConfigError(
                "expected a running local stack (got: none). Start one with `skiff local up`, "
                "or point at a deployed stack with --stack outputs.json"
            )
        return cls.from_dict(json.loads(state.read_text())["outputs"], str(state))


class ApiError(SkiffError):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(f"HTTP {status} {code}: {message}")


class StackClient:
    def __init__(self, outputs: StackOutputs, region: str | None = None) -> None:
        self.outputs = outputs
        self.region, self.region_source = outputs.signing_region(region) if not outputs.is_local else ("", "local")
        if outputs.is_local:
            # The local stack's moto server stands in for AWS; boto3 reads these settings itself.
            os.environ["AWS_ENDPOINT_URL"] = outputs.aws_endpoint_url or ""
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
            os.environ.setdefault("AWS_DEFAULT_REGION", outputs.region or "us-east-1")

    # ---- HTTP APIs ---------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = dict(headers or {})
        if data is not None:
            all_headers["content-type"] = "application/json"
        url = self.outputs.api_url.rstrip("/") + path
        if not self.outputs.is_local:
            all_headers = self._sign(method, url, data, all_headers)
        request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": str(exc.reason)}
            raise ApiError(exc.code, error["code"], error["message"]) from exc
        except urllib.error.URLError as exc:
            raise SkiffError(f"expected the stack's API at {self.outputs.api_url} (got: {exc.reason})") from exc

    def _sign(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        session = boto3.session.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigError("expected AWS credentials to sign admin requests (got: none); configure the AWS CLI")
        aws_request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(credentials, "execute-api", self.region).add_auth(aws_request)
        return dict(aws_request.headers.items())

    def predict(self, texts: list[str]) -> dict[str, Any]:
        return self.request("POST", "/predict", {"texts": texts})

    def models(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.request("GET", f"/models?limit={limit}")["models"]

    def production(self) -> dict[str, Any]:
        return self.request("GET", "/models/production")

    def model(self, version: str) -> dict[str, Any]:
        return self.request("GET", f"/models/{urllib.parse.quote(version, safe='')}")

    def artifact_file(self, model: dict[str, Any], name: str) -> bytes | None:
        """One file of a version's artifact (its report picture, metrics, manifest), read from
        the artifacts bucket with the caller's credentials; None when the version has none."""
        from skiff.registry.artifacts import parse_s3_uri

        if not model.get("artifact_uri"):
            return None
        bucket, prefix = parse_s3_uri(model["artifact_uri"])
        s3 = client("s3")
        try:
            return s3.get_object(Bucket=bucket, Key=prefix.rstrip("/") + "/" + name)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None

    def logs_console_url(self, job_name: str) -> str | None:
        """Where a deployed job's CloudWatch log streams are in the AWS console (None locally)."""
        if self.outputs.is_local:
            return None
        from skiff.retrain.launch import TRAINING_LOG_GROUP

        def escaped(value: str) -> str:  # the console's own double escaping of its URL fragment
            return urllib.parse.quote(urllib.parse.quote(value, safe=""), safe="").replace("%", "$")

        return (
            f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
            f"#logsV2:log-groups/log-group/{escaped(TRAINING_LOG_GROUP)}"
            f"/log-events$3FlogStreamNameFilter$3D{escaped(job_name + '/')}"
        )

    def promote(self, version: str, reason: str) -> dict[str, Any]:
        key = {"idempotency-key": f"cli-{uuid.uuid4()}"}
        return self.request("POST", f"/models/{version}/promote", {"reason": reason}, key)

    def rollback(self, reason: str) -> dict[str, Any]:
        return self.request("POST", "/rollback", {"reason": reason}, {"idempotency-key": f"cli-{uuid.uuid4()}"})

    def start_canary(self, version: str, percent: float, minutes: float, reason: str) -> dict[str, Any]:
        body = {"reason": reason, "percent": percent, "minutes": minutes}
        key = {"idempotency-key": f"cli-{uuid.uuid4()}"}
        return self.request("POST", f"/models/{urllib.parse.quote(version, safe='')}/canary", body, key)

    def abort_canary(self, reason: str) -> dict[str, Any]:
        return self.request("POST", "/canary/abort", {"reason": reason}, {"idempotency-key": f"cli-{uuid.uuid4()}"})

    # ---- data and jobs -------------------------------------------------------------------------
    def upload(self, path: Path, name: str | None = None) -> dict[str, Any]:
        content = path.read_bytes()
        key = f"incoming/{name or path.name}"
        client("s3").put_object(Bucket=self.outputs.data_bucket, Key=key, Body=content)
        return {"key": key, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}

    def upload_outcome(self, upload: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Wait until the stack has accepted (a dataset version) or rejected (a report) the upload."""
        from skiff.data.versions import INCOMING, REJECTIONS, DatasetCatalog

        s3 = client("s3")
        catalog = DatasetCatalog(self.outputs.registry_table, self.outputs.data_bucket)
        report_key = f"{REJECTIONS}{upload['key'][len(INCOMING) :]}.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = catalog.first_version_with(upload["sha256"])
            if version is not None:
                return {"status": "accepted", "dataset_version": version.version, "rows": version.rows}
            try:
                report = json.loads(s3.get_object(Bucket=self.outputs.data_bucket, Key=report_key)["Body"].read())
                return {"status": "rejected", **report}
            except s3.exceptions.NoSuchKey:
                pass
            time.sleep(0.3)
        raise SkiffError(
            f"expected the stack to process {upload['key']} within {timeout:.0f}s (got: no outcome yet); "
            "check `skiff jobs` and the upload trigger's logs"
        )

    def history(self) -> list[dict[str, Any]]:
        """Every production alias change the registry API returns, newest first."""
        return self.production()["history"]

    def _catalog(self) -> Any:
        from skiff.data.versions import DatasetCatalog

        return DatasetCatalog(self.outputs.registry_table, self.outputs.data_bucket)

    def datasets(self, limit: int = 50) -> list[dict[str, Any]]:
        """Dataset versions, newest first: rows, label counts, how many uploads each holds."""
        return [version.to_dict() for version in self._catalog().versions(limit)]

    def dataset_parts(self, version: str) -> list[dict[str, Any]]:
        """The uploads a dataset version holds, oldest first (hash, rows, labels, source, when)."""
        return self._catalog().parts(version, rebuild=False)

    def rejections(self, limit: int = 50) -> list[dict[str, Any]]:
        """Rejected uploads, newest first, with the reason and the lines at fault."""
        return self._catalog().rejections(limit)

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """This stack's newest jobs (by name prefix, not the account's), with status, epoch
        progress (local stack) and, for a failed job, SageMaker's FailureReason."""
        sagemaker = client("sagemaker")
        prefix = f"{self.outputs.job_prefix}-"
        summaries: list[dict[str, Any]] = []
        pages = sagemaker.get_paginator("list_training_jobs").paginate(
            NameContains=prefix, SortBy="CreationTime", SortOrder="Descending"
        )
        for page in pages:
            summaries += [
                s
                for s in page["TrainingJobSummaries"]
                if dataset_version_of(self.outputs.job_prefix, s["TrainingJobName"])  # not "<prefix>-2-…"'s
            ]
            if len(summaries) >= limit:
                break
        progress = self._local_progress()
        jobs = []
        for summary in summaries[:limit]:
            name = summary["TrainingJobName"]
            local = progress.pop(name, {})
            # moto marks every job Completed at once; the local executor knows the real state.
            status = local.get("status", "Pending") if self.outputs.is_local else summary["TrainingJobStatus"]
            reason = local.get("failure_reason")
            if reason is None and status == "Failed" and not self.outputs.is_local:
                reason = sagemaker.describe_training_job(TrainingJobName=name).get("FailureReason")
            jobs.append(
                _job_row(name, prefix, status, local, reason, str(summary["CreationTime"]), _seconds(summary, local))
            )
        # Jobs of an earlier run of the local stack: moto forgot them, its progress file did not.
        for name, local in sorted(progress.items(), key=lambda item: -float(item[1].get("started") or 0)):
            created = datetime.fromtimestamp(float(local.get("started") or 0), UTC).isoformat(sep=" ")
            status = local.get("status", "Unknown")
            jobs.append(
                _job_row(name, prefix, status, local, local.get("failure_reason"), created, _seconds({}, local))
            )
        return jobs[:limit]

    def log_lines(self, job_name: str, after: int = 0) -> list[str]:
        """The job's output from line ``after`` on: the local executor's log file, or the job's
        CloudWatch streams (``/aws/sagemaker/TrainingJobs``, ``<job>/algo-N-…``) when deployed."""
        if self.outputs.is_local:
            record = self._local_progress().get(job_name)
            if record is None:
                raise NotFoundError(
                    f"expected a job of this stack named {job_name} (got: no such job; see `skiff jobs`)"
                )
            path = Path(record.get("log") or "")
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
            return lines[after:]
        from skiff.retrain.launch import TRAINING_LOG_GROUP

        logs = client("logs")
        pages = logs.get_paginator("filter_log_events").paginate(
            logGroupName=TRAINING_LOG_GROUP, logStreamNamePrefix=f"{job_name}/"
        )
        try:
            # The prefix is checked here too: moto 5.2.5 ignores logStreamNamePrefix in this call.
            lines = [
                event["message"]
                for page in pages
                for event in page.get("events", [])
                if event.get("logStreamName", "").startswith(f"{job_name}/")
            ]
        except logs.exceptions.ResourceNotFoundException:
            lines = []
        return lines[after:]

    def job_status(self, job_name: str) -> str:
        for job in self.jobs(limit=200):
            if job["name"] == job_name:
                return job["status"]
        raise NotFoundError(f"expected a job of this stack named {job_name} (got: no such job; see `skiff jobs`)")

    def _local_progress(self) -> dict[str, Any]:
        path = Path(self.outputs.progress_file) if self.outputs.progress_file else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}

    def notifications(self) -> list[dict[str, Any]]:
        """What the local stack's topic delivered, oldest first. A deployed stack's topic keeps
        no history: its subscribers (skiff:notificationEmail, or any SNS subscription) have it."""
        if not self.outputs.notifications_file:
            topic = self.outputs.notifications_topic_arn or "the stack output notifications_topic_arn"
            raise ConfigError(
                f"expected a local stack (got: a deployed one). Its notifications go to the SNS topic {topic}: "
                "set skiff:notificationEmail, or `aws sns subscribe --topic-arn TOPIC --protocol email "
                "--notification-endpoint YOU@EXAMPLE.COM`"
            )
        path = Path(self.outputs.notifications_file)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def wait_for_job(self, dataset_version: str, timeout: float = 180) -> dict[str, Any]:
        """Wait until the job for ``dataset_version`` has ended and its version is registered or failed."""
        job_name = f"{self.outputs.job_prefix}-{dataset_version}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for model in self.models(limit=20):
                if model["lineage"].get("training_job") == job_name and model["status"] != "candidate":
                    return model
            time.sleep(0.5)
        raise SkiffError(f"expected training job {job_name} to finish within {timeout:.0f}s (got: still running)")


def _seconds(summary: dict[str, Any], local: dict[str, Any]) -> float | None:
    """How long a job has run: the local executor's clock, else SageMaker's creation and end
    times (a running job: until now)."""
    if local.get("started"):
        return round(float(local.get("ended") or time.time()) - float(local["started"]), 1)
    created = summary.get("CreationTime")
    if not isinstance(created, datetime):
        return None
    ended = summary.get("TrainingEndTime") or datetime.now(created.tzinfo)
    return round((ended - created).total_seconds(), 1)


def _job_row(
    name: str,
    prefix: str,
    status: str,
    local: dict[str, Any],
    failure_reason: str | None,
    created: str,
    seconds: float | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "dataset_version": name[len(prefix) :],
        "status": status,
        "epoch": local.get("epoch"),
        "epochs": local.get("epochs"),
        "failure_reason": failure_reason,
        "created": created,
        "seconds": seconds,
    }
