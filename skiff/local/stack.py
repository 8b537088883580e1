"""The embedded local stack: the whole product on one machine, with the very same handlers.

- AWS APIs: a moto server on 127.0.0.1 (one request at a time, see moto_server.py), holding
  the same resources the Pulumi stack creates, named from the same prefix.
- Event routing: S3 -> SQS notifications are delivered by moto; a router drains the upload
  queue into the upload trigger, exactly as Lambda's SQS event source would. Training-job
  state changes go through a real EventBridge rule with the stack's pattern, delivered to an
  SQS queue (moto cannot invoke Lambda targets) that the router drains into the completion
  handler.
- Training: moto records create_training_job but runs nothing; the executor runs each new
  job with training/train.py under the SageMaker container contract and emits its
  state-change event.
- HTTP: a front on 127.0.0.1 turns requests into API Gateway v2 events for the inference and
  registry handlers. The inference function, its published versions and its alias live in
  moto like every other resource; requests go through the alias to the version it names,
  each with that version's environment (published.py), so switches behave as deployed.

This module is the one place skiff imports from functions/: here skiff plays the Lambda
runtime, and the point is to run the very handlers that are deployed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skiff.aws import client, reset_clients
from skiff.local.http_front import HttpFront, LocalContext
from skiff.local.moto_server import MotoServer
from skiff.local.published import AliasInvoker, create_function, handler_zip
from skiff.local.sagemaker import event_detail, run_described_job
from skiff.local.state import StateStore
from skiff.registry.table import Registry, create_table
from skiff.retrain.launch import training_event_pattern
from skiff.serve.canary_alarms import CanaryAlarms, CanaryAlarmSettings
from skiff.serve.lambda_alias import AliasSettings, InferenceAlias, follow_alias, production_changed_pattern

log = logging.getLogger(__name__)

REGION = "us-east-1"
ADMIN_PATHS = ("/models", "/rollback", "/canary")
LOCAL_ARN = f"arn:aws:lambda:{REGION}:123456789012"  # moto's default account
ALIAS = "live"  # the inference function's alias that the API invokes, as deployed (infra/serving.py)


def _handler_modules() -> tuple[Any, Any, Any, Any]:
    """The Lambda handlers, imported from the checkout (functions/ is deployed, not installed)."""
    import sys

    from skiff.packaging.bundle import ROOT

    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    from functions.inference import handler as inference
    from functions.registry_api import handler as registry_api
    from functions.training_events import handler as training_events
    from functions.upload_trigger import handler as upload_trigger

    return inference, registry_api, upload_trigger, training_events


@dataclass(frozen=True)
class LocalStackConfig:
    prefix: str = "skiff-local"
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "skiff-local")
    api_port: int = 0
    moto_port: int = 0
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    gate_metric: str = "accuracy"
    gate_tolerance: float = 0.0
    gate_baseline_margin: float = 0.02
    alias_ttl_seconds: float = 2.0
    poll_seconds: float = 0.2
    # False: the alias stays on $LATEST, whose "containers" poll the registry every
    # alias_ttl_seconds, as stacks did before published versions (benchmarks compare the two).
    published_versions: bool = True

    @property
    def names(self) -> dict[str, str]:
        p = self.prefix
        return {
            "data_bucket": f"{p}-data",
            "artifacts_bucket": f"{p}-artifacts",
            "registry_table": f"{p}-registry",
            "upload_queue": f"{p}-upload",
            "upload_dlq": f"{p}-upload-dlq",
            "training_events_queue": f"{p}-training-events",
            "training_events_dlq": f"{p}-training-events-dlq",
            "training_rule": f"{p}-training-job-state",
            "notifications_topic": f"{p}-notifications",
            "notifications_inbox": f"{p}-notifications-inbox",
            "inference_function": f"{p}-inference",
            "production_changed_rule": f"{p}-production-changed",
            "training_events_function": f"{p}-training-events",
            "serving_alarm": f"{p}-inference-5xx-rate",
        }


class LocalStack:
    def __init__(self, config: LocalStackConfig = LocalStackConfig()) -> None:
        self.config = config
        self.moto = MotoServer(port=config.moto_port)
        self.http: HttpFront | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ran_jobs: set[str] = set()
        self.job_progress: dict[str, dict[str, Any]] = {}
        self.state = StateStore(config.work_dir / "state")
        # Held by every step that changes what the state snapshot holds, and by the snapshot:
        # a snapshot never sees half of an upload's acceptance or of a job's registration.
        self._state_lock = threading.RLock()
        self._saved_at = 0.0
        self.restored: dict[str, int] = {}
        self._saved_env: dict[str, str | None] = {}
        self.errors: list[str] = []
        self._inbox_lock = threading.Lock()  # the delivery thread and a caller wanting everything now

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalStack:
        self.moto.start()
        names = self.config.names
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        self._set_env(
            {
                "AWS_ENDPOINT_URL": self.moto.endpoint_url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_SESSION_TOKEN": None,
                "AWS_PROFILE": None,
                "SKIFF_REGISTRY_TABLE": names["registry_table"],
                "SKIFF_DATA_BUCKET": names["data_bucket"],
                "SKIFF_ARTIFACTS_BUCKET": names["artifacts_bucket"],
                "SKIFF_JOB_PREFIX": self.config.prefix,
                "SKIFF_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/skiff-local-sagemaker",
                "SKIFF_TRAINING_IMAGE_URI": "local/training-container:latest",
                "SKIFF_TRAINING_SOURCE_URI": f"s3://{names['artifacts_bucket']}/source/sourcedir.tar.gz",
                "SKIFF_HYPERPARAMETERS": json.dumps(self.config.hyperparameters),
                "SKIFF_GATE_METRIC": self.config.gate_metric,
                "SKIFF_GATE_TOLERANCE": str(self.config.gate_tolerance),
                "SKIFF_GATE_BASELINE_MARGIN": str(self.config.gate_baseline_margin),
                "SKIFF_ALIAS_TTL_SECONDS": str(self.config.alias_ttl_seconds),
                "SKIFF_MODEL_CACHE_DIR": str(self.config.work_dir / "model-cache"),
                "SKIFF_WORK_DIR": str(self.config.work_dir / "completion"),
                "SKIFF_INFERENCE_FUNCTION": names["inference_function"] if self.config.published_versions else None,
                "SKIFF_INFERENCE_ALIAS": ALIAS,
                "SKIFF_KEEP_PUBLISHED_VERSIONS": "true",  # see AliasSettings.delete_unused
                # Canaries end by a schedule (fired by this stack: moto keeps schedules, runs none)
                # and are judged by the serving alarm (in moto; set its state to try an abort).
                "SKIFF_CANARY_TARGET_ARN": f"{LOCAL_ARN}:function:{names['training_events_function']}",
                "SKIFF_CANARY_ROLE_ARN": "arn:aws:iam::123456789012:role/skiff-local-canary-scheduler",
                "SKIFF_SERVING_ALARMS": names["serving_alarm"],
                # A running canary's own alarms, kept on its published version (in moto, which
                # evaluates none: set one's state to try an abort at the end).
                "SKIFF_CANARY_ALARMS": "true" if self.config.published_versions else None,
                "POWERTOOLS_METRICS_NAMESPACE": "Skiff",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "POWERTOOLS_METRICS_DISABLED": "true",  # no EMF lines on a laptop terminal
            }
        )
        reset_clients()
        self._quiet_logs()
        self._forget_handler_state()
        self._provision()
        self._set_env({"SKIFF_NOTIFICATIONS_TOPIC_ARN": self.notifications_topic, "SKIFF_STACK": self.config.prefix})
        self.restored = self.state.restore(client("s3"), client("dynamodb"))
        # moto's Lambda state is not kept across runs: publish production again and point the alias at it.
        self.inference_alias = InferenceAlias(
            AliasSettings(names["inference_function"], ALIAS, delete_unused=False),
            canary_alarms=CanaryAlarms(CanaryAlarmSettings(self.config.prefix)),
        )
        if self.config.published_versions:
            follow_alias(Registry(names["registry_table"]), self.inference_alias, announce=False)
        self._announce_earlier_jobs()
        inference, registry_api, _, _ = self._handlers()
        self.inference = AliasInvoker(inference, self.inference_alias)

        def registry_api_locked(event: dict[str, Any], context: Any) -> dict[str, Any]:
            with self._state_lock:  # promote and rollback change the registry
                return registry_api(event, context)

        self.http = HttpFront(
            [
                (names["inference_function"], lambda path: path == "/predict", self.inference),
                ("skiff-local-registry-api", lambda path: path.startswith(ADMIN_PATHS), registry_api_locked),
            ],
            port=self.config.api_port,
        ).start()
        loops = (
            (self._route_events, "event-router"),
            (self._fire_schedules, "scheduler"),
            (self._execute_jobs, "training-executor"),
            (self._persist, "state-saver"),
            (self.deliver_notifications, "notifications"),
        )
        for target, name in loops:
            thread = threading.Thread(target=self._forever(target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        if self.http is not None:
            self.http.stop()
        try:
            self.save_state()
        except Exception:  # stopping must finish; the last periodic snapshot stays
            log.exception("could not save the local stack's state on the way out")
        self.moto.stop()
        reset_clients()
        for name in ("skiff", "functions"):
            logging.getLogger(name).removeHandler(self._log_handler)
            logging.getLogger(name).propagate = True
        self._log_handler.close()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _quiet_logs(self) -> None:
        """The functions' logs go to work_dir/stack.log, not over the CLI's output."""
        self._log_handler = logging.FileHandler(self.config.work_dir / "stack.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in ("skiff", "functions"):
            logger = logging.getLogger(name)
            logger.addHandler(self._log_handler)
            logger.propagate = False
        # Metrics are off locally (POWERTOOLS_METRICS_DISABLED); Powertools still warns each call.
        warnings.filterwarnings("ignore", message="No application metrics to publish")

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        assert self.http is not None
        return self.http.url

    @property
    def endpoint_url(self) -> str:
        return self.moto.endpoint_url

    def outputs(self) -> dict[str, str]:
        """The same keys as the Pulumi stack's outputs, so the CLI treats both alike."""
        names = self.config.names
        return {
            "api_url": self.api_url,
            "data_bucket": names["data_bucket"],
            "artifacts_bucket": names["artifacts_bucket"],
            "registry_table": names["registry_table"],
            "job_prefix": self.config.prefix,
            "aws_endpoint_url": self.endpoint_url,
            "region": REGION,
            "upload_command": f"skiff upload data.csv   (s3://{names['data_bucket']}/incoming/)",
            "progress_file": str(self.progress_file),
            "notifications_topic_arn": self.notifications_topic,
            "notifications_file": str(self.notifications_file),
        }

    @property
    def progress_file(self) -> Path:
        return self.config.work_dir / "jobs.json"

    def _record_progress(self, name: str, **changes: Any) -> None:
        self.job_progress.setdefault(name, {}).update(changes)
        partial = self.progress_file.with_suffix(".tmp")
        partial.write_text(json.dumps(self.job_progress))
        partial.replace(self.progress_file)

    # ---- set-up ------------------------------------------------------------------------------
    def _set_env(self, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @staticmethod
    def _handlers() -> tuple[Callable[..., Any], ...]:
        return tuple(module.lambda_handler for module in _handler_modules())

    @staticmethod
    def _forget_handler_state() -> None:
        """A fresh stack means fresh "containers": drop what the handler modules cached."""
        inference, registry_api, upload_trigger, training_events = _handler_modules()
        inference.server.cache_clear()
        registry_api.registry.cache_clear()
        registry_api.inference_alias.cache_clear()
        registry_api.canary_scheduler.cache_clear()
        registry_api._idempotent_change = None
        upload_trigger.catalog.cache_clear()
        upload_trigger.scheduler.cache_clear()
        training_events.completion.cache_clear()
        training_events.notifier.cache_clear()
        registry_api.notifier.cache_clear()

    def _provision(self) -> None:
        names = self.config.names
        s3, sqs, events = client("s3"), client("sqs"), client("events")
        for bucket in (names["data_bucket"], names["artifacts_bucket"]):
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        create_table(names["registry_table"])
        dlq = sqs.create_queue(QueueName=names["upload_dlq"])["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.upload_queue = sqs.create_queue(
            QueueName=names["upload_queue"],
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
        )["QueueUrl"]
        upload_arn = sqs.get_queue_attributes(QueueUrl=self.upload_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        s3.put_bucket_notification_configuration(
            Bucket=names["data_bucket"],
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": upload_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                    }
                ]
            },
        )
        # Like the deployed rule's target: an event its handler keeps failing on goes to a DLQ
        # after 3 tries instead of being retried for ever.
        events_dlq = sqs.create_queue(QueueName=names["training_events_dlq"])["QueueUrl"]
        events_dlq_arn = sqs.get_queue_attributes(QueueUrl=events_dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.events_queue = sqs.create_queue(
            QueueName=names["training_events_queue"],
            Attributes={
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": events_dlq_arn, "maxReceiveCount": "3"}),
                "VisibilityTimeout": "5",
            },
        )["QueueUrl"]
        events_arn = sqs.get_queue_attributes(QueueUrl=self.events_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(
            Name=names["training_rule"], EventPattern=json.dumps(training_event_pattern(self.config.prefix))
        )
        events.put_targets(Rule=names["training_rule"], Targets=[{"Id": "completion", "Arn": events_arn}])
        events.put_rule(
            Name=names["production_changed_rule"],
            EventPattern=json.dumps(production_changed_pattern(self.config.prefix)),
        )
        events.put_targets(Rule=names["production_changed_rule"], Targets=[{"Id": "completion", "Arn": events_arn}])
        from skiff.packaging.bundle import ROOT, build_training_source

        inference_source = (ROOT / "functions" / "inference" / "handler.py").read_bytes()
        client("cloudwatch").put_metric_alarm(
            AlarmName=names["serving_alarm"],
            Namespace="AWS/ApiGateway",
            MetricName="5xx",
            Statistic="Average",
            Period=60,
            EvaluationPeriods=1,
            Threshold=0.05,
            ComparisonOperator="GreaterThanThreshold",
            TreatMissingData="notBreaching",
        )
        create_function(
            names["inference_function"],
            ALIAS,
            {"SKIFF_REGISTRY_TABLE": names["registry_table"], "SKIFF_ARTIFACTS_BUCKET": names["artifacts_bucket"]},
            handler_zip(inference_source),
        )
        # The stack's topic, with one subscriber standing in for an e-mail inbox (see notifications).
        sns = client("sns")
        self.notifications_topic = sns.create_topic(Name=names["notifications_topic"])["TopicArn"]
        self.notifications_inbox = sqs.create_queue(QueueName=names["notifications_inbox"])["QueueUrl"]
        inbox_arn = sqs.get_queue_attributes(QueueUrl=self.notifications_inbox, AttributeNames=["QueueArn"])
        sns.subscribe(TopicArn=self.notifications_topic, Protocol="sqs", Endpoint=inbox_arn["Attributes"]["QueueArn"])
        # No wheels: the local executor runs training/ from this checkout in this environment.
        source = build_training_source(self.config.work_dir / "source", target=None)
        s3.upload_file(str(source), names["artifacts_bucket"], "source/sourcedir.tar.gz")

    # ---- the moving parts ----------------------------------------------------------------------
    def _forever(self, step: Callable[[], bool]) -> Callable[[], None]:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    busy = step()
                except Exception as exc:  # a background loop must survive one bad event; record why
                    log.exception("local stack loop failed")
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    busy = False
                if not busy:
                    self._stop.wait(self.config.poll_seconds)

        return loop

    def _route_events(self) -> bool:
        """Deliver queued messages to their handler, as Lambda event source mappings do."""
        with self._state_lock:
            return self._route_events_locked()

    def _route_events_locked(self) -> bool:
        _, _, upload_trigger, training_events = self._handlers()
        sqs = client("sqs")
        busy = False
        messages = sqs.receive_message(QueueUrl=self.upload_queue, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if messages:
            busy = True
            arn = sqs.get_queue_attributes(QueueUrl=self.upload_queue, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            event = {"Records": [_sqs_record(m, arn) for m in messages]}
            response = upload_trigger(event, LocalContext(f"{self.config.prefix}-upload-trigger"))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=self.upload_queue, ReceiptHandle=message["ReceiptHandle"])
        for message in sqs.receive_message(QueueUrl=self.events_queue, MaxNumberOfMessages=10).get("Messages", []):
            busy = True
            try:
                training_events(json.loads(message["Body"]), LocalContext(f"{self.config.prefix}-training-events"))
            except Exception as exc:  # left in the queue: retried, then moved to the DLQ (see _provision)
                log.exception("the training-events function failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            sqs.delete_message(QueueUrl=self.events_queue, ReceiptHandle=message["ReceiptHandle"])
        return busy

    def _fire_schedules(self) -> bool:
        """Invoke the completion function with each one-time schedule's input once it is due, then
        delete the schedule, as EventBridge Scheduler does with ActionAfterCompletion=DELETE."""
        with self._state_lock:
            return self._fire_schedules_locked()

    def _fire_schedules_locked(self) -> bool:
        _, _, _, training_events = self._handlers()
        scheduler = client("scheduler")
        fired = False
        for summary in scheduler.list_schedules().get("Schedules", []):
            schedule = scheduler.get_schedule(Name=summary["Name"])
            due = one_time_schedule_due(schedule["ScheduleExpression"])
            if due is None or due > datetime.now(UTC):
                continue
            scheduler.delete_schedule(Name=summary["Name"])
            fired = True
            try:
                training_events(
                    json.loads(schedule["Target"]["Input"]), LocalContext(f"{self.config.prefix}-training-events")
                )
            except Exception as exc:  # Scheduler would retry, then drop it; the log says why
                log.exception("the training-events function failed on schedule %s", summary["Name"])
                self.errors.append(f"{type(exc).__name__}: {exc}")
        return fired

    @property
    def notifications_file(self) -> Path:
        """Every notification the stack sent, one JSON object per line (``skiff notifications``)."""
        return self.config.work_dir / "notifications.jsonl"

    def deliver_notifications(self) -> bool:
        """Move what the topic delivered to its subscriber into ``notifications_file``; when it
        returns, everything published before the call is in the file."""
        sqs = client("sqs")
        with self._inbox_lock:
            messages = sqs.receive_message(QueueUrl=self.notifications_inbox, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            for message in messages:
                envelope = json.loads(message["Body"])
                received = {"at": envelope.get("Timestamp"), "subject": envelope.get("Subject")}
                with self.notifications_file.open("a", encoding="utf-8") as inbox:
                    inbox.write(json.dumps({**received, **json.loads(envelope["Message"])}) + "\n")
                sqs.delete_message(QueueUrl=self.notifications_inbox, ReceiptHandle=message["ReceiptHandle"])
        return bool(messages)

    # ---- state that survives a restart ---------------------------------------------------------
    SAVE_EVERY_SECONDS = 2.0

    def save_state(self) -> None:
        names = self.config.names
        with self._state_lock:
            self.state.save(
                client("s3"),
                client("dynamodb"),
                (names["data_bucket"], names["artifacts_bucket"]),
                (names["registry_table"],),
            )
            self._saved_at = time.monotonic()

    def _persist(self) -> bool:
        if time.monotonic() - self._saved_at >= self.SAVE_EVERY_SECONDS:
            self.save_state()
        return False

    def _announce_earlier_jobs(self) -> None:
        """Jobs of an earlier run: an interrupted one ends as Failed with that reason; every
        ended one is announced again, since its event may have been lost with the old process
        (the completion handler treats a repeated event as a duplicate)."""
        if not self.progress_file.is_file():
            return
        self.job_progress = json.loads(self.progress_file.read_text())
        for name, record in self.job_progress.items():
            self._ran_jobs.add(name)  # never run again by this stack
            if record.get("status") == "InProgress":
                reason = "Failed: interrupted: the local stack stopped while the job ran; upload again to retrain"
                detail = event_detail(
                    record.get("request") or {"TrainingJobName": name}, "Failed", FailureReason=reason
                )
                self._record_progress(name, status="Failed", ended=time.time(), failure_reason=reason, detail=detail)
            if record.get("detail"):
                self._announce(record["detail"])

    @staticmethod
    def _announce(detail: dict[str, Any]) -> None:
        client("events").put_events(
            Entries=[
                {
                    "Source": "aws.sagemaker",
                    "DetailType": "SageMaker Training Job State Change",
                    "Detail": json.dumps(detail),
                    "Resources": [detail.get("TrainingJobArn") or ""],
                }
            ]
        )

    def _execute_jobs(self) -> bool:
        """Run each new training job locally, then announce its end through EventBridge."""
        sagemaker = client("sagemaker")
        summaries = sagemaker.list_training_jobs(SortBy="CreationTime", SortOrder="Ascending")["TrainingJobSummaries"]
        pending = [s["TrainingJobName"] for s in summaries if s["TrainingJobName"] not in self._ran_jobs]
        if not pending:
            return False
        name = pending[0]
        self._ran_jobs.add(name)
        description = sagemaker.describe_training_job(TrainingJobName=name)
        # DescribeTrainingJob has no tags; SageMaker's events do (they are how the rule knows the stack).
        description["Tags"] = sagemaker.list_tags(ResourceArn=description["TrainingJobArn"])["Tags"]
        request = {
            k: description[k]
            for k in ("TrainingJobName", "HyperParameters", "InputDataConfig", "Tags")
            if k in description
        }
        self._record_progress(name, status="InProgress", epoch=0, epochs=None, started=time.time(), request=request)

        def on_progress(event: dict[str, Any]) -> None:
            if event["event"] == "epoch":
                self._record_progress(name, epoch=event["epoch"], epochs=event["epochs"])

        root = self.config.work_dir / "jobs" / name
        shutil.rmtree(root, ignore_errors=True)
        # Where run_described_job's container writes the job's output (`skiff logs` reads it).
        self._record_progress(name, log=str(root / "container" / "output" / "training.log"))
        try:
            detail = run_described_job(description, root, on_progress=on_progress, cancel=self._stop)
        except Exception as exc:  # the job itself broke (not the model): report it as SageMaker would
            detail = event_detail(description, "Failed", FailureReason=f"InternalServerError: {exc}")
        self._record_progress(
            name,
            status=detail["TrainingJobStatus"],
            ended=time.time(),
            failure_reason=detail.get("FailureReason"),
            detail=detail,
        )
        self._announce(detail)
        return True


def one_time_schedule_due(expression: str) -> datetime | None:
    """When ``at(YYYY-MM-DDTHH:MM:SS)`` (UTC) is due; None for other expressions."""
    if not (expression.startswith("at(") and expression.endswith(")")):
        return None
    return datetime.fromisoformat(expression[3:-1]).replace(tzinfo=UTC)


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
