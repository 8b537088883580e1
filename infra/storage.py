"""Storage: the data and artifacts buckets, their KMS key, and the upload queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.policies import document, service_may_send
from skiff.data.versions import INCOMING, QUARANTINE, REJECTIONS


@dataclass(frozen=True)
class StorageArgs:
    prefix: str
    quarantine_expiry_days: int
    noncurrent_version_days: int
    upload_visibility_timeout_seconds: int = 900  # >= the upload trigger's timeout, as SQS requires
    account_id: str | None = None  # S3 may notify the upload queue for this account's bucket only
    checkpoint_expiry_days: int = 7  # checkpoints matter only while a (spot) job runs
    job_output_expiry_days: int = 90  # model.tar.gz from jobs; the registry serves its own copy under models/
    access_log_expiry_days: int = 365  # S3 server access logs of both buckets


ACCESS_LOGS = "access-logs/"
"""Where the log bucket keeps each bucket's S3 server access logs (``access-logs/<bucket>/…``)."""


class Storage(pulumi.ComponentResource):
    """Versioned, KMS-encrypted, private, TLS-only buckets; S3 -> SQS for ``incoming/``."""

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"{args.prefix}: data, artifacts and registry",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=key_policy(args.account_id) if args.account_id else None,
            opts=child,
        )
        self.data_bucket = self._bucket(
            f"{name}-data", args, {QUARANTINE: args.quarantine_expiry_days, REJECTIONS: args.quarantine_expiry_days}
        )
        self.artifacts_bucket = self._bucket(
            f"{name}-artifacts",
            args,
            {"checkpoints/": args.checkpoint_expiry_days, "jobs/": args.job_output_expiry_days},
        )
        self.log_bucket = self._log_bucket(
            f"{name}-access-logs", args, {f"{name}-data": self.data_bucket, f"{name}-artifacts": self.artifacts_bucket}
        )

        self.upload_dlq = aws.sqs.Queue(
            f"{name}-upload-dlq", message_retention_seconds=14 * 24 * 3600, sqs_managed_sse_enabled=True, opts=child
        )
        self.upload_queue = aws.sqs.Queue(
            f"{name}-upload",
            visibility_timeout_seconds=args.upload_visibility_timeout_seconds,
            sqs_managed_sse_enabled=True,
            redrive_policy=pulumi.Output.json_dumps({"deadLetterTargetArn": self.upload_dlq.arn, "maxReceiveCount": 5}),
            opts=child,
        )
        queue_policy = aws.sqs.QueuePolicy(
            f"{name}-upload-policy",
            queue_url=self.upload_queue.id,
            policy=document(
                [service_may_send(self.upload_queue.arn, "s3.amazonaws.com", self.data_bucket.arn, args.account_id)]
            ),
            opts=child,
        )
        self.notification = aws.s3.BucketNotification(
            f"{name}-incoming-to-queue",
            bucket=self.data_bucket.id,
            queues=[
                aws.s3.BucketNotificationQueueArgs(
                    queue_arn=self.upload_queue.arn,
                    events=["s3:ObjectCreated:*"],
                    filter_prefix=INCOMING,
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[queue_policy]),
        )
        self.register_outputs(
            {
                "data_bucket": self.data_bucket.bucket,
                "artifacts_bucket": self.artifacts_bucket.bucket,
                "upload_queue_arn": self.upload_queue.arn,
                "key_arn": self.key.arn,
                "log_bucket": self.log_bucket.bucket,
            }
        )

    def _log_bucket(self, name: str, args: StorageArgs, sources: dict[str, aws.s3.Bucket]) -> aws.s3.Bucket:
        """Who read or wrote what, for ``sources``: S3 server access logs, delivered by S3's
        logging service (for these buckets of this account only), kept for a set time."""
        child = pulumi.ResourceOptions(parent=self)
        logs = self._bucket(
            name,
            args,
            {ACCESS_LOGS: args.access_log_expiry_days},
            # S3 delivers access logs only to a bucket encrypted with S3-managed keys (not KMS).
            sse_algorithm="AES256",
            allow=lambda bucket: [
                {
                    "Sid": "S3ServerAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": pulumi.Output.concat(bucket.arn, "/", ACCESS_LOGS, "*"),
                    "Condition": {
                        "ArnLike": {"aws:SourceArn": [source.arn for source in sources.values()]},
                        **({"StringEquals": {"aws:SourceAccount": args.account_id}} if args.account_id else {}),
                    },
                }
            ],
        )
        for source_name, source in sources.items():
            aws.s3.BucketLogging(
                f"{source_name}-access-logging",
                bucket=source.id,
                target_bucket=logs.id,
                target_prefix=pulumi.Output.concat(ACCESS_LOGS, source.bucket, "/"),
                opts=child,
            )
        return logs

    def _bucket(
        self,
        name: str,
        args: StorageArgs,
        expiring: dict[str, int],
        sse_algorithm: str = "aws:kms",
        allow: Callable[[aws.s3.Bucket], list[dict[str, Any]]] | None = None,
    ) -> aws.s3.Bucket:
        """A bucket whose objects under each prefix of ``expiring`` go after that many days;
        encrypted with the stack's key unless ``sse_algorithm`` says otherwise; its policy denies
        requests without TLS and grants what ``allow`` returns for it."""
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, force_destroy=False, opts=child)
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm=sse_algorithm,
                        kms_master_key_id=self.key.arn if sse_algorithm == "aws:kms" else None,
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        rules = [
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-noncurrent-versions",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=args.noncurrent_version_days
                ),
            )
        ]
        rules += [
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id=f"expire-{prefix.rstrip('/')}",
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=prefix),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
            )
            for prefix, days in expiring.items()
        ]
        aws.s3.BucketLifecycleConfiguration(f"{name}-lifecycle", bucket=bucket.id, rules=rules, opts=child)
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=document(
                [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                    *(allow(bucket) if allow else []),
                ]
            ),
            opts=child,
        )
        return bucket


def key_policy(account_id: str) -> str:
    """The key's own policy: the account administers it through IAM (as with the default policy),
    and CloudWatch may use it for this account only: alarms publish to the stack's topic, which
    it encrypts (CloudWatch cannot publish to a topic encrypted with the AWS-managed SNS key)."""
    import json

    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdministersThroughIam",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchAlarmsToTheEncryptedTopic",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudwatch.amazonaws.com"},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
            ],
        }
    )


def source_object(name: str, bucket: aws.s3.Bucket, key: str, path: str, opts: pulumi.ResourceOptions) -> Any:
    """A source bundle built on this machine, uploaded to ``bucket`` as ``key``."""
    return aws.s3.BucketObjectv2(name, bucket=bucket.id, key=key, source=pulumi.FileAsset(path), opts=opts)
