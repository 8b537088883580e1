"""Upload trigger Lambda: S3 ObjectCreated events for ``incoming/``, delivered through SQS.

SQS batches uploads (a batching window in the stack), so a burst of files arrives as one
invocation: every file is validated and folded into the dataset, then the newest dataset
version is scheduled once — one job for the burst, not one per file. Records that fail
unexpectedly are reported back as partial batch failures and retried alone.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from skiff import settings
from skiff.data.dataset import CsvLimits
from skiff.data.versions import DatasetCatalog
from skiff.retrain.launch import TrainingJobSettings, TrainingScheduler

logger = Logger(service="skiff-upload-trigger")
metrics = Metrics(namespace="Skiff", service="upload-trigger")
tracer = Tracer(service="skiff-upload-trigger")  # X-Ray, when the function runs with active tracing
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def catalog() -> DatasetCatalog:
    limits = CsvLimits(
        max_bytes=settings.integer("SKIFF_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1),
        max_rows=settings.integer("SKIFF_MAX_UPLOAD_ROWS", 2_000_000, minimum=1),
    )
    return DatasetCatalog(settings.require("SKIFF_REGISTRY_TABLE"), settings.require("SKIFF_DATA_BUCKET"), limits)


@cache
def scheduler() -> TrainingScheduler:
    return TrainingScheduler(settings.require("SKIFF_REGISTRY_TABLE"), TrainingJobSettings.from_env())


def handle_record(record: SQSRecord) -> None:
    body = record.json_body
    if body.get("Event") == "s3:TestEvent":
        return  # S3 posts this once when the notification is configured
    for s3_record in S3Event(body).records:
        # S3 URL-encodes keys in notifications ("my file.csv" arrives as "my+file.csv").
        bucket, key = s3_record.s3.bucket.name, unquote_plus(s3_record.s3.get_object.key)
        if bucket != catalog().bucket:
            logger.warning("ignoring an object in another bucket", extra={"bucket": bucket, "key": key})
            continue
        outcome = catalog().accept_upload(key, s3_record.s3.get_object.size)
        logger.info("upload %s", outcome.status, extra=outcome.log_fields())
        metrics.add_metric(name=f"Uploads_{outcome.status}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    with processor(records=event["Records"], handler=handle_record):
        processor.process()
    head = catalog().head()
    if head is not None:
        catalog().write_manifests(head)  # once per batch: the training channel of what is scheduled
        outcome = scheduler().schedule(head.version, head.revision, catalog().channel_manifest_uri(head.version))
        logger.info("training %s", outcome.status, extra={"dataset_version": head.version, "job": outcome.job_name})
        if outcome.status == "started":
            metrics.add_metric(name="TrainingJobsStarted", unit=MetricUnit.Count, value=1)
    return processor.response()
