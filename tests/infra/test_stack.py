"""The Pulumi program under Pulumi's unit-test mocks: security properties, wiring, config variants."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.monitoring import alarm_event_pattern
from skiff.retrain.launch import training_event_pattern
from skiff.serve.canary_alarms import ERRORS, LATENCY
from tests.infra.conftest import IMAGE, REGION, Deployed, Resource, run_program

ALLOWED_STAR_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "cloudwatch:GetMetricStatistics",  # no resource types in the service authorization reference
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "logs:DescribeLogGroups",
}


def statements(policy: Resource) -> list[dict[str, Any]]:
    return policy.json("policy")["Statement"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def function(stack: Deployed, short: str) -> Resource:
    return stack.one("aws:lambda/function:Function", lambda r: r.inputs["name"] == f"skiff-test-{short}")


def env(stack: Deployed, short: str) -> dict[str, str]:
    return function(stack, short).inputs["environment"]["variables"]


PRODUCTION_CHANGERS = ("registry-api", "training-events", "alarm-rollback")
CANARY_ALARMS = (ERRORS, LATENCY)


def test_program_creates_one_component_per_concern(stack: Deployed) -> None:
    components = {r.type for r in stack.resources if r.type.startswith("skiff:")}
    assert components == {
        "skiff:index:Storage",
        "skiff:index:Registry",
        "skiff:index:Retraining",
        "skiff:index:Serving",
        "skiff:index:Monitoring",
        "skiff:index:Notifications",
        "skiff:index:Function",
    }


# ---- storage ----------------------------------------------------------------------------


def encryption_of(stack: Deployed, bucket: str) -> dict[str, Any]:
    bucket_id = stack.named("aws:s3/bucket:Bucket", bucket)
    (config,) = [
        c
        for c in stack.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
        if c.name == f"{bucket_id.name}-encryption"
    ]
    (rule,) = config.inputs["rules"]
    return rule["applyServerSideEncryptionByDefault"]


@pytest.mark.parametrize("bucket", ["storage-data", "storage-artifacts"])
def test_data_and_artifacts_are_kms_encrypted_with_the_stack_key(stack: Deployed, bucket: str) -> None:
    key_arn = stack.one("aws:kms/key:Key").outputs["arn"]
    default = encryption_of(stack, bucket)
    assert (default["sseAlgorithm"], default["kmsMasterKeyId"]) == ("aws:kms", key_arn)


def test_the_access_log_bucket_is_encrypted_with_s3_keys_as_log_delivery_requires(stack: Deployed) -> None:
    assert encryption_of(stack, "storage-access-logs") == {"sseAlgorithm": "AES256"}


def test_both_buckets_log_every_access_to_the_log_bucket(stack: Deployed) -> None:
    logs = stack.named("aws:s3/bucket:Bucket", "storage-access-logs")
    logging = {r.name: r.inputs for r in stack.of_type("aws:s3/bucketLogging:BucketLogging")}
    assert set(logging) == {"storage-data-access-logging", "storage-artifacts-access-logging"}
    for short in ("data", "artifacts"):
        bucket = stack.named("aws:s3/bucket:Bucket", f"storage-{short}").outputs["bucket"]
        assert logging[f"storage-{short}-access-logging"]["targetBucket"] == f"{logs.name}-id"
        assert logging[f"storage-{short}-access-logging"]["targetPrefix"] == f"access-logs/{bucket}/"


def test_only_s3_logging_for_this_stacks_buckets_and_account_may_write_access_logs(stack: Deployed) -> None:
    policy = stack.named("aws:s3/bucketPolicy:BucketPolicy", "storage-access-logs-tls-only")
    (allow,) = [s for s in statements(policy) if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"} and allow["Action"] == "s3:PutObject"
    assert allow["Resource"].endswith("/access-logs/*")
    sources = {stack.named("aws:s3/bucket:Bucket", f"storage-{b}").outputs["arn"] for b in ("data", "artifacts")}
    assert set(allow["Condition"]["ArnLike"]["aws:SourceArn"]) == sources
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}


def test_access_logs_expire(stack: Deployed) -> None:
    lifecycle = stack.named(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "storage-access-logs-lifecycle"
    )
    rules = {r["id"]: r for r in lifecycle.inputs["rules"]}
    assert rules["expire-access-logs"]["expiration"]["days"] == 365


def test_every_bucket_blocks_all_public_access(stack: Deployed) -> None:
    blocks = stack.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert len(blocks) == 3
    for block in blocks:
        assert all(
            block.inputs[k] is True
            for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        )


def test_every_bucket_policy_denies_requests_without_tls(stack: Deployed) -> None:
    policies = stack.of_type("aws:s3/bucketPolicy:BucketPolicy")
    assert len(policies) == 3
    for policy in policies:
        (deny,) = [s for s in statements(policy) if s["Effect"] == "Deny"]
        assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert len(deny["Resource"]) == 2 and deny["Resource"][1].endswith("/*")
        assert not any(s["Effect"] == "Allow" and s.get("Principal") == "*" for s in statements(policy))


def test_every_bucket_is_versioned(stack: Deployed) -> None:
    versioning = stack.of_type("aws:s3/bucketVersioning:BucketVersioning")
    assert [v.inputs["versioningConfiguration"]["status"] for v in versioning] == ["Enabled"] * 3


def test_quarantine_and_rejections_expire_and_old_versions_go(stack: Deployed) -> None:
    data_lifecycle = stack.named("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "data-lifecycle")
    rules = {r["id"]: r for r in data_lifecycle.inputs["rules"]}
    assert rules["expire-quarantine"]["filter"]["prefix"] == "quarantine/"
    assert rules["expire-quarantine"]["expiration"]["days"] == 30
    assert rules["expire-rejections"]["filter"]["prefix"] == "rejections/"
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 30


def test_checkpoints_and_job_output_expire(stack: Deployed) -> None:
    lifecycle = stack.named("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "artifacts-lifecycle")
    rules = {r["id"]: r for r in lifecycle.inputs["rules"]}
    assert (rules["expire-checkpoints"]["filter"]["prefix"], rules["expire-checkpoints"]["expiration"]["days"]) == (
        "checkpoints/",
        7,
    )
    assert (rules["expire-jobs"]["filter"]["prefix"], rules["expire-jobs"]["expiration"]["days"]) == ("jobs/", 90)
    assert "expire-models" not in rules  # what serves never expires


def test_expiry_of_checkpoints_is_configurable(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, checkpoint_expiry_days=2)
    lifecycle = stack.named("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "artifacts-lifecycle")
    assert {r["id"]: r for r in lifecycle.inputs["rules"]}["expire-checkpoints"]["expiration"]["days"] == 2


def test_incoming_uploads_notify_the_upload_queue(stack: Deployed) -> None:
    notification = stack.one("aws:s3/bucketNotification:BucketNotification")
    upload_queue = stack.named("aws:sqs/queue:Queue", "storage-upload")
    (queue,) = notification.inputs["queues"]
    assert queue["queueArn"] == upload_queue.outputs["arn"]
    assert (queue["filterPrefix"], queue["events"]) == ("incoming/", ["s3:ObjectCreated:*"])
    assert notification.inputs["bucket"] == "storage-data-id"  # the data bucket's id under the mocks


def test_only_s3_from_the_data_bucket_may_send_to_the_upload_queue(stack: Deployed) -> None:
    policy = stack.named("aws:sqs/queuePolicy:QueuePolicy", "storage-upload-policy")
    (allow,) = statements(policy)
    data_bucket_arn = stack.named("aws:s3/bucket:Bucket", "storage-data").outputs["arn"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert allow["Condition"] == {
        "ArnEquals": {"aws:SourceArn": data_bucket_arn},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }


def test_only_this_accounts_training_rule_may_send_to_the_events_dlq(stack: Deployed) -> None:
    policy = stack.one("aws:sqs/queuePolicy:QueuePolicy", lambda r: "events" in r.name)
    (allow,) = statements(policy)
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}


def test_sagemaker_assumes_the_stacks_roles_only_on_behalf_of_this_account(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, gpu_endpoint=True, gpu_inference_image_uri=GPU_IMAGE)
    roles = [r for r in stack.of_type("aws:iam/role:Role") if "sagemaker.amazonaws.com" in r.inputs["assumeRolePolicy"]]
    assert len(roles) == 2  # training and the GPU endpoint
    for role in roles:
        (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_upload_queue_has_a_dead_letter_queue(stack: Deployed) -> None:
    queue = stack.named("aws:sqs/queue:Queue", "storage-upload")
    dlq = stack.named("aws:sqs/queue:Queue", "storage-upload-dlq")
    assert queue.json("redrivePolicy")["deadLetterTargetArn"] == dlq.outputs["arn"]


# ---- registry ---------------------------------------------------------------------------


def test_registry_table_is_on_demand_recoverable_encrypted_and_protected(stack: Deployed) -> None:
    table = stack.one("aws:dynamodb/table:Table")
    assert table.inputs["billingMode"] == "PAY_PER_REQUEST"
    assert table.inputs["pointInTimeRecovery"] == {"enabled": True}
    assert table.inputs["serverSideEncryption"]["enabled"] is True
    assert table.inputs["deletionProtectionEnabled"] is True
    assert (table.inputs["hashKey"], table.inputs["rangeKey"]) == ("pk", "sk")


def test_deletion_protection_is_configurable(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, table_deletion_protection=False)
    assert stack.one("aws:dynamodb/table:Table").inputs["deletionProtectionEnabled"] is False


# ---- IAM --------------------------------------------------------------------------------


def test_no_policy_allows_a_wildcard_action(stack: Deployed) -> None:
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            assert not any("*" in action for action in as_list(s["Action"])), (policy.name, s)


def test_wildcard_resources_only_where_aws_requires_them(stack: Deployed) -> None:
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            if "*" in as_list(s["Resource"]):
                assert set(as_list(s["Action"])) <= ALLOWED_STAR_ACTIONS, (policy.name, s)


def test_s3_permissions_are_scoped_to_the_stacks_buckets_and_prefixes(stack: Deployed) -> None:
    bucket_arns = {b.outputs["arn"] for b in stack.of_type("aws:s3/bucket:Bucket")}
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            if not any(a.startswith("s3:") for a in as_list(s["Action"])):
                continue
            for resource in as_list(s["Resource"]):
                if resource in bucket_arns:  # bucket-level: ListBucket only, narrowed by prefix but for one grant
                    assert set(as_list(s["Action"])) == {"s3:ListBucket"}, (policy.name, s)
                    assert "s3:prefix" in str(s.get("Condition")) or policy.name.endswith("upload-trigger-policy")
                else:
                    bucket, _, key = resource.partition("/")
                    assert bucket in bucket_arns and key.endswith("/*") and len(key) > 2, resource


def test_the_upload_trigger_may_list_the_data_bucket_so_a_moved_upload_reads_as_404(stack: Deployed) -> None:
    data_bucket = stack.named("aws:s3/bucket:Bucket", "data").outputs["arn"]
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "upload-trigger-policy")
    grants = [s for s in statements(policy) if as_list(s["Action"]) == ["s3:ListBucket"]]
    assert grants == [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [data_bucket]}]


def test_dynamodb_permissions_name_only_the_registry_table(stack: Deployed) -> None:
    table_arn = stack.one("aws:dynamodb/table:Table").outputs["arn"]
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            if any(a.startswith("dynamodb:") for a in as_list(s["Action"])):
                assert as_list(s["Resource"]) == [table_arn]


def test_each_function_has_its_own_role(stack: Deployed) -> None:
    functions = stack.of_type("aws:lambda/function:Function")
    roles = [f.inputs["role"] for f in functions]
    assert len(functions) == 5 and len(set(roles)) == 5


def test_each_role_may_be_passed_only_to_its_own_service(stack: Deployed) -> None:
    """The training role to SageMaker; the canary role to EventBridge Scheduler; nothing else."""
    allowed = {
        stack.named("aws:iam/role:Role", "sagemaker-role").outputs["arn"]: "sagemaker.amazonaws.com",
        stack.named("aws:iam/role:Role", "canary-scheduler-role").outputs["arn"]: "scheduler.amazonaws.com",
    }
    passed = set()
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            if "iam:PassRole" in as_list(s["Action"]):
                (role,) = s["Resource"]
                assert s["Condition"] == {"StringEquals": {"iam:PassedToService": allowed[role]}}
                passed.add(role)
    assert passed == set(allowed)


def test_training_jobs_can_be_started_only_under_the_stack_prefix(stack: Deployed) -> None:
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            if "sagemaker:CreateTrainingJob" in as_list(s["Action"]):
                assert s["Resource"] == ["arn:aws:sagemaker:eu-west-1:123456789012:training-job/skiff-test-*"]


def create_job_conditions(stack: Deployed) -> list[dict[str, Any]]:
    found = [
        s.get("Condition", {})
        for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy")
        for s in statements(policy)
        if "sagemaker:CreateTrainingJob" in as_list(s["Action"])
    ]
    assert len(found) == 2  # the upload trigger and the completion function start jobs
    return found


def test_jobs_can_be_started_only_on_the_configured_instance_type(stack: Deployed) -> None:
    for condition in create_job_conditions(stack):
        assert condition["ForAllValues:StringEquals"] == {"sagemaker:InstanceTypes": ["ml.g5.xlarge"]}


def test_jobs_can_be_started_only_network_isolated(stack: Deployed) -> None:
    for condition in create_job_conditions(stack):
        assert condition["Bool"] == {"sagemaker:NetworkIsolation": "true"}


def test_multi_instance_jobs_must_encrypt_traffic_between_instances(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, training_instance_count=2)
    for condition in create_job_conditions(stack):
        assert condition["Bool"]["sagemaker:InterContainerTrafficEncryption"] == "true"


def test_jobs_must_encrypt_their_output_with_the_stack_key(stack: Deployed) -> None:
    key_arn = stack.one("aws:kms/key:Key").outputs["arn"]
    for condition in create_job_conditions(stack):
        assert condition["ArnEquals"] == {"sagemaker:OutputKmsKey": key_arn}  # g5: instance storage, no volume key


def test_jobs_on_an_ebs_instance_must_encrypt_their_volume_with_the_stack_key(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, training_instance_type="ml.m5.xlarge")
    key_arn = stack.one("aws:kms/key:Key").outputs["arn"]
    for condition in create_job_conditions(stack):
        assert condition["ArnEquals"] == {"sagemaker:OutputKmsKey": key_arn, "sagemaker:VolumeKmsKey": key_arn}


def test_the_job_launchers_are_told_the_stack_key(stack: Deployed) -> None:
    key_arn = stack.one("aws:kms/key:Key").outputs["arn"]
    assert (
        env(stack, "upload-trigger")["SKIFF_KMS_KEY_ARN"]
        == env(stack, "training-events")["SKIFF_KMS_KEY_ARN"]
        == key_arn
    )


def test_the_training_role_may_read_registered_models_to_distill_from_but_never_write_them(stack: Deployed) -> None:
    artifacts = stack.named("aws:s3/bucket:Bucket", "artifacts").outputs["arn"]
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "sagemaker-policy")
    grants = {(a, r) for s in statements(policy) for a in as_list(s["Action"]) for r in as_list(s["Resource"])}
    assert ("s3:GetObject", f"{artifacts}/models/*") in grants
    assert not any(r.startswith(f"{artifacts}/models/") for a, r in grants if a == "s3:PutObject")
    listing = [s for s in statements(policy) if as_list(s["Resource"]) == [artifacts]]
    assert any("models/*" in s["Condition"]["StringLike"]["s3:prefix"] for s in listing)


def test_job_launchers_may_set_retention_on_sagemakers_training_log_group_only(stack: Deployed) -> None:
    group = "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/TrainingJobs:*"
    for short in ("upload-trigger", "training-events"):
        policy = stack.named("aws:iam/rolePolicy:RolePolicy", f"retraining-{short}-policy")
        (grant,) = [s for s in statements(policy) if "logs:PutRetentionPolicy" in as_list(s["Action"])]
        assert grant["Resource"] == [group]
        assert env(stack, short)["SKIFF_TRAINING_LOG_RETENTION_DAYS"] == "30"


def test_without_isolation_the_condition_is_not_demanded(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, training_network_isolation=False)
    for condition in create_job_conditions(stack):
        assert "Bool" not in condition


# ---- retraining wiring ------------------------------------------------------------------


def test_upload_queue_feeds_the_upload_trigger_in_batches(stack: Deployed) -> None:
    mapping = stack.one("aws:lambda/eventSourceMapping:EventSourceMapping")
    assert mapping.inputs["eventSourceArn"] == stack.named("aws:sqs/queue:Queue", "storage-upload").outputs["arn"]
    assert mapping.inputs["functionName"] == function(stack, "upload-trigger").outputs["arn"]
    assert mapping.inputs["maximumBatchingWindowInSeconds"] == 30
    assert mapping.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]


def test_training_rule_matches_only_this_stacks_final_job_states(stack: Deployed) -> None:
    rule = stack.named("aws:cloudwatch/eventRule:EventRule", "training-job-state")
    pattern = rule.json("eventPattern")
    assert pattern == training_event_pattern("skiff-test")
    assert pattern["detail"]["TrainingJobName"] == [{"prefix": "skiff-test-ds-"}]
    assert pattern["detail"]["Tags"] == {"skiff:stack": ["skiff-test"]}


def test_training_rule_targets_the_completion_function_with_a_dlq(stack: Deployed) -> None:
    target = stack.named("aws:cloudwatch/eventTarget:EventTarget", "training-job-state-target")
    assert target.inputs["arn"] == function(stack, "training-events").outputs["arn"]
    dlq = stack.named("aws:sqs/queue:Queue", "training-events-dlq")
    assert target.inputs["deadLetterConfig"]["arn"] == dlq.outputs["arn"]


def test_retraining_functions_point_at_the_stacks_resources(stack: Deployed) -> None:
    table = stack.one("aws:dynamodb/table:Table").inputs["name"]
    data = stack.named("aws:s3/bucket:Bucket", "storage-data").outputs["bucket"]
    artifacts = stack.named("aws:s3/bucket:Bucket", "storage-artifacts").outputs["bucket"]
    role = stack.named("aws:iam/role:Role", "sagemaker-role").outputs["arn"]
    for short in ("upload-trigger", "training-events"):
        variables = env(stack, short)
        assert variables["SKIFF_REGISTRY_TABLE"] == table
        assert variables["SKIFF_DATA_BUCKET"] == data
        assert variables["SKIFF_ARTIFACTS_BUCKET"] == artifacts
        assert variables["SKIFF_SAGEMAKER_ROLE_ARN"] == role
        assert variables["SKIFF_JOB_PREFIX"] == "skiff-test"
        assert variables["SKIFF_TRAINING_SOURCE_URI"] == f"s3://{artifacts}/source/sourcedir.tar.gz"


def test_training_source_bundle_is_uploaded(stack: Deployed) -> None:
    source = stack.one("aws:s3/bucketObjectv2:BucketObjectv2")
    assert source.inputs["key"] == "source/sourcedir.tar.gz"


@pytest.mark.parametrize("use_spot", [True, False])
def test_spot_training_is_configurable(bundle_dir: Path, use_spot: bool) -> None:
    stack = run_program(bundle_dir, use_spot=use_spot)
    assert env(stack, "upload-trigger")["SKIFF_TRAINING_USE_SPOT"] == str(use_spot).lower()


def test_training_jobs_are_network_isolated_by_default(stack: Deployed) -> None:
    assert env(stack, "upload-trigger")["SKIFF_TRAINING_NETWORK_ISOLATION"] == "true"
    assert env(stack, "training-events")["SKIFF_TRAINING_NETWORK_ISOLATION"] == "true"


def test_network_isolation_can_be_turned_off(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, training_network_isolation=False)
    assert env(stack, "upload-trigger")["SKIFF_TRAINING_NETWORK_ISOLATION"] == "false"


def test_an_explicit_training_image_wins(stack: Deployed) -> None:
    assert env(stack, "upload-trigger")["SKIFF_TRAINING_IMAGE_URI"] == IMAGE


@pytest.mark.parametrize(
    ("instance_type", "build"), [("ml.g5.xlarge", "gpu"), ("ml.m5.xlarge", "cpu")], ids=["gpu", "cpu"]
)
def test_without_an_image_the_newest_training_dlc_is_resolved_for_the_region(
    bundle_dir: Path, instance_type: str, build: str
) -> None:
    stack = run_program(bundle_dir, training_image_uri=None, training_instance_type=instance_type)
    image = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-training:2.10-{build}-py313"
    assert env(stack, "upload-trigger")["SKIFF_TRAINING_IMAGE_URI"] == image
    role_policy = json.dumps([r.inputs for r in stack.of_type("aws:iam/rolePolicy:RolePolicy")])
    assert f"arn:aws:ecr:{REGION}:763104351884:repository/pytorch-training" in role_policy


def test_a_framework_version_without_a_python_313_image_is_refused_at_preview() -> None:
    from infra.settings import StackSettings
    from skiff.errors import ConfigError

    settings = StackSettings(prefix="skiff-test", training_framework_version="2.5")
    with pytest.raises(ConfigError, match=r"skiff:trainingFrameworkVersion .* py313 .* \(got: '2.5'"):
        settings.resolve_training_image(REGION)


# ---- serving ----------------------------------------------------------------------------


def test_admin_routes_require_iam(stack: Deployed) -> None:
    routes = {
        r.inputs["routeKey"]: r.inputs["authorizationType"] for r in stack.of_type("aws:apigatewayv2/route:Route")
    }
    admin = {k: v for k, v in routes.items() if k != "POST /predict"}
    assert set(admin) == {
        "GET /models",
        "GET /models/production",
        "GET /models/{version}",
        "POST /models/{version}/promote",
        "POST /models/{version}/canary",
        "POST /canary/abort",
        "POST /rollback",
    }
    assert set(admin.values()) == {"AWS_IAM"}
    assert routes["POST /predict"] == "NONE"


def test_predict_auth_is_configurable(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, predict_auth="iam")
    route = stack.one("aws:apigatewayv2/route:Route", lambda r: r.inputs["routeKey"] == "POST /predict")
    assert route.inputs["authorizationType"] == "AWS_IAM"


def test_stage_throttles_and_logs_access(stack: Deployed) -> None:
    stage = stack.one("aws:apigatewayv2/stage:Stage")
    assert stage.inputs["defaultRouteSettings"]["throttlingRateLimit"] == 50
    assert stage.inputs["defaultRouteSettings"]["throttlingBurstLimit"] == 100
    assert (
        stage.inputs["accessLogSettings"]["destinationArn"]
        == stack.named("aws:cloudwatch/logGroup:LogGroup", "api-access-logs").outputs["arn"]
    )


def test_inference_function_reads_only_models_and_the_registry(stack: Deployed) -> None:
    variables = env(stack, "inference")
    assert variables["SKIFF_REGISTRY_TABLE"] == stack.one("aws:dynamodb/table:Table").inputs["name"]
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "serving-inference-policy")
    actions = {a for s in statements(policy) for a in as_list(s["Action"])}
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "kms:Decrypt",
        "s3:GetObject",
        "xray:PutTraceSegments",  # its traces
        "xray:PutTelemetryRecords",
    }


@pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
def test_lambda_architecture_is_configurable(bundle_dir: Path, architecture: str) -> None:
    stack = run_program(bundle_dir, lambda_architecture=architecture)
    assert {tuple(f.inputs["architectures"]) for f in stack.of_type("aws:lambda/function:Function")} == {
        (architecture,)
    }
    assert stack.one("aws:lambda/layerVersion:LayerVersion").inputs["compatibleArchitectures"] == [architecture]


def test_provisioned_concurrency_goes_through_an_alias(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, provisioned_concurrency=2)
    config = stack.one("aws:lambda/provisionedConcurrencyConfig:ProvisionedConcurrencyConfig")
    assert (config.inputs["qualifier"], config.inputs["provisionedConcurrentExecutions"]) == ("live", 2)
    alias = stack.one("aws:lambda/alias:Alias")
    assert alias.inputs["functionVersion"] == "1"  # the version Pulumi publishes: PC needs one
    assert "snapStart" not in function(stack, "inference").inputs  # Lambda refuses both together


# ---- published versions, SnapStart, the alias ------------------------------------------------


def test_the_api_invokes_the_inference_alias_which_starts_on_latest(stack: Deployed) -> None:
    alias = stack.one("aws:lambda/alias:Alias")
    assert (alias.inputs["name"], alias.inputs["functionName"], alias.inputs["functionVersion"]) == (
        "live",
        "skiff-test-inference",
        "$LATEST",
    )
    integration = stack.named("aws:apigatewayv2/integration:Integration", "serving-inference-integration")
    assert integration.inputs["integrationUri"] == alias.outputs["arn"]
    permission = stack.named("aws:lambda/permission:Permission", "serving-inference-invoke")
    assert permission.inputs["qualifier"] == "live"


def test_inference_function_publishes_nothing_itself_and_snapstarts_published_versions(stack: Deployed) -> None:
    inference = function(stack, "inference")
    assert not inference.inputs.get("publish")  # one version per model version, published by the stack
    assert inference.inputs["snapStart"] == {"applyOn": "PublishedVersions"}


def test_snapstart_can_be_turned_off(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, snapstart=False)
    assert "snapStart" not in function(stack, "inference").inputs


@pytest.mark.parametrize("short", PRODUCTION_CHANGERS)
def test_every_function_that_changes_production_may_move_the_alias_of_the_inference_function_only(
    stack: Deployed, short: str
) -> None:
    variables = env(stack, short)
    assert (variables["SKIFF_INFERENCE_FUNCTION"], variables["SKIFF_INFERENCE_ALIAS"]) == (
        "skiff-test-inference",
        "live",
    )
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", f"{short}-policy")
    (moves,) = [s for s in statements(policy) if "lambda:UpdateAlias" in as_list(s["Action"])]
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:skiff-test-inference"
    assert moves["Resource"] == [arn, f"{arn}:*"]
    assert {"lambda:PublishVersion", "lambda:UpdateFunctionConfiguration", "lambda:DeleteFunction"} <= set(
        moves["Action"]
    )


def test_a_canary_ends_by_a_schedule_that_may_invoke_the_completion_function_only(stack: Deployed) -> None:
    completion = function(stack, "training-events").outputs["arn"]
    variables = env(stack, "registry-api")
    assert variables["SKIFF_CANARY_TARGET_ARN"] == completion
    role = stack.named("aws:iam/role:Role", "canary-scheduler-role")
    assert variables["SKIFF_CANARY_ROLE_ARN"] == role.outputs["arn"]
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    (invoke,) = statements(stack.named("aws:iam/rolePolicy:RolePolicy", "canary-scheduler-policy"))
    assert (invoke["Action"], invoke["Resource"]) == (["lambda:InvokeFunction"], [completion])
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "registry-api-policy")
    (schedules,) = [s for s in statements(policy) if "scheduler:CreateSchedule" in s["Action"]]
    assert schedules["Resource"] == ["arn:aws:scheduler:eu-west-1:123456789012:schedule/default/skiff-test-canary-*"]


def test_the_completion_function_reads_the_serving_alarms_that_decide_a_canary(stack: Deployed) -> None:
    from infra.monitoring import SERVING_ALARMS

    names = {a.inputs["name"] for a in stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    serving = env(stack, "training-events")["SKIFF_SERVING_ALARMS"].split(",")
    assert serving == [f"skiff-test-{short}" for short in SERVING_ALARMS] and set(serving) <= names
    rule = stack.named("aws:cloudwatch/eventRule:EventRule", "monitoring-serving-alarm")
    assert len(json.loads(rule.inputs["eventPattern"])["resources"]) == len(SERVING_ALARMS) + len(CANARY_ALARMS)


def test_the_completion_function_reads_the_canarys_own_errors_with_the_5xx_rate_as_its_limit(
    stack: Deployed,
) -> None:
    assert env(stack, "training-events")["SKIFF_CANARY_MAX_ERROR_RATE"] == "0.05"
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "retraining-training-events-policy")
    (metrics,) = [s for s in statements(policy) if "cloudwatch:GetMetricStatistics" in s["Action"]]
    assert metrics["Resource"] == ["*"]


@pytest.mark.parametrize("short", PRODUCTION_CHANGERS)
def test_whoever_moves_the_alias_keeps_the_canary_alarms_at_the_serving_alarms_limits(
    stack: Deployed, short: str
) -> None:
    variables = env(stack, short)
    assert variables["SKIFF_CANARY_ALARMS"] == "true"
    assert (variables["SKIFF_CANARY_MAX_ERROR_RATE"], variables["SKIFF_CANARY_MAX_P99_MS"]) == ("0.05", "1000")
    policy = stack.one("aws:iam/rolePolicy:RolePolicy", lambda p: p.name.endswith(f"{short}-policy"))
    (alarms,) = [s for s in statements(policy) if "cloudwatch:PutMetricAlarm" in s["Action"]]
    assert set(alarms["Action"]) == {
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:DeleteAlarms",
    }
    assert alarms["Resource"] == [
        f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:skiff-test-{a}" for a in CANARY_ALARMS
    ]


def test_a_production_change_that_must_wait_reaches_the_completion_function(stack: Deployed) -> None:
    rule = stack.named("aws:cloudwatch/eventRule:EventRule", "retraining-production-changed")
    assert json.loads(rule.inputs["eventPattern"]) == {
        "source": ["skiff.registry"],
        "detail-type": ["Skiff Production Changed"],
        "detail": {"stack": ["skiff-test"]},
    }
    target = stack.named("aws:cloudwatch/eventTarget:EventTarget", "retraining-production-changed-target")
    assert target.inputs["arn"] == function(stack, "training-events").outputs["arn"]
    assert "deadLetterConfig" in target.inputs


def test_each_deployment_that_changes_the_inference_function_has_production_published_again(
    stack: Deployed,
) -> None:
    from skiff.serve.lambda_alias import deployment_event

    invocation = stack.one("aws:lambda/invocation:Invocation")
    assert invocation.inputs["functionName"] == function(stack, "training-events").outputs["name"]
    assert json.loads(invocation.inputs["input"]) == deployment_event("skiff-test")
    assert invocation.inputs["triggers"] == {"inference_modified": function(stack, "inference").outputs["lastModified"]}


# ---- monitoring -------------------------------------------------------------------------


def test_alarms_cover_serving_training_and_dead_letters(stack: Deployed) -> None:
    names = {a.inputs["name"] for a in stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert names == {
        "skiff-test-inference-5xx-rate",
        "skiff-test-inference-p99-latency",
        "skiff-test-production-unloadable",
        "skiff-test-inference-throttles",
        "skiff-test-training-failures",
        "skiff-test-upload-dlq-depth",
        "skiff-test-training-events-dlq-depth",
        "skiff-test-production-changed-dlq-depth",
        "skiff-test-alarm-rollback-dlq-depth",
    }


def test_serving_alarms_trigger_the_rollback_function(stack: Deployed) -> None:
    alarms = [
        stack.one("aws:cloudwatch/metricAlarm:MetricAlarm", lambda a, n=n: a.inputs["name"] == n)
        for n in (
            "skiff-test-inference-5xx-rate",
            "skiff-test-inference-p99-latency",
            "skiff-test-production-unloadable",
        )
    ]
    rule = stack.named("aws:cloudwatch/eventRule:EventRule", "serving-alarm")
    canary_alarms = [f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:skiff-test-{a}" for a in CANARY_ALARMS]
    assert rule.json("eventPattern") == alarm_event_pattern([*[a.outputs["arn"] for a in alarms], *canary_alarms])
    target = stack.named("aws:cloudwatch/eventTarget:EventTarget", "serving-alarm-target")
    assert target.inputs["arn"] == function(stack, "alarm-rollback").outputs["arn"]


def test_the_unloadable_alarm_counts_the_inference_503s_and_the_rollback_function_may_check_models(
    stack: Deployed,
) -> None:
    alarm = stack.one("aws:cloudwatch/metricAlarm:MetricAlarm", lambda a: a.inputs["name"].endswith("unloadable"))
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == ("Skiff", "Errors_model_unavailable")
    assert alarm.inputs["dimensions"] == {"service": "inference"}
    variables = env(stack, "alarm-rollback")
    assert variables["SKIFF_UNLOADABLE_ALARM"] == "skiff-test-production-unloadable"
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "monitoring-alarm-rollback-policy")
    reads = [s for s in statements(policy) if as_list(s["Action"]) == ["s3:GetObject"]]
    assert reads and all(r.endswith("/models/*") for s in reads for r in as_list(s["Resource"]))


def test_an_alarm_event_the_rollback_function_cannot_take_is_retried_then_kept(stack: Deployed) -> None:
    target = stack.named("aws:cloudwatch/eventTarget:EventTarget", "serving-alarm-target")
    dlq = stack.named("aws:sqs/queue:Queue", "alarm-rollback-dlq")
    assert target.inputs["deadLetterConfig"] == {"arn": dlq.outputs["arn"]}
    assert target.inputs["retryPolicy"] == {"maximumEventAgeInSeconds": 3600, "maximumRetryAttempts": 8}


def test_outputs_name_the_api_the_buckets_and_an_upload_command(stack: Deployed) -> None:
    data = stack.named("aws:s3/bucket:Bucket", "storage-data").outputs["bucket"]
    assert stack.outputs["upload_command"] == f"aws s3 cp data.csv s3://{data}/incoming/"
    assert stack.outputs["api_url"] == "https://abc123.execute-api.eu-west-1.amazonaws.com"
    assert stack.outputs["data_bucket"] == data and stack.outputs["registry_table"] == "skiff-test-registry"


def test_pulumi_yaml_documents_every_setting() -> None:
    import dataclasses

    import yaml

    from infra.settings import StackSettings
    from tests.conftest import ROOT

    documented = set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])
    names = [f.name for f in dataclasses.fields(StackSettings)]
    expected = {"skiff:" + name.split("_")[0] + "".join(p.capitalize() for p in name.split("_")[1:]) for name in names}
    assert documented == expected


def test_bad_setting_is_refused_with_the_key_named() -> None:
    from infra.settings import StackSettings
    from skiff.errors import ConfigError

    with pytest.raises(ConfigError, match=r"skiff:predictAuth should be none or iam \(got: 'open'\)"):
        StackSettings(prefix="x", predict_auth="open")


# ---- GPU endpoint -----------------------------------------------------------------------

GPU_IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.6-gpu-py312"


def test_gpu_endpoint_is_off_by_default(stack: Deployed) -> None:
    assert not [r for r in stack.resources if r.type == "skiff:index:GpuEndpoint"]
    assert all("SKIFF_GPU_ENDPOINT_NAME" not in env(stack, short) for short in PRODUCTION_CHANGERS)


def test_gpu_endpoint_wires_every_function_that_changes_production(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, gpu_endpoint=True, gpu_inference_image_uri=GPU_IMAGE)
    role = stack.named("aws:iam/role:Role", "gpu-endpoint-role").outputs["arn"]
    for short in PRODUCTION_CHANGERS:
        variables = env(stack, short)
        assert variables["SKIFF_GPU_ENDPOINT_NAME"] == "skiff-test-gpu"
        assert variables["SKIFF_GPU_ENDPOINT_ROLE_ARN"] == role
        assert variables["SKIFF_GPU_INFERENCE_IMAGE_URI"] == GPU_IMAGE
    assert "SKIFF_GPU_ENDPOINT_NAME" not in env(stack, "inference")
    assert stack.outputs["gpu_endpoint_name"] == "skiff-test-gpu"


def test_gpu_endpoint_permissions_name_only_its_own_resources(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, gpu_endpoint=True, gpu_inference_image_uri=GPU_IMAGE)
    for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
        for s in statements(policy):
            if "sagemaker:UpdateEndpoint" in as_list(s["Action"]):
                names = [r.split(":", 5)[5].split("/", 1)[1] for r in as_list(s["Resource"])]
                assert names == ["skiff-test-gpu-*", "skiff-test-gpu-*", "skiff-test-gpu"], s["Resource"]


def test_gpu_endpoint_image_is_the_regions_pytorch_inference_dlc_for_the_wheels_python(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, gpu_endpoint=True)
    assert env(stack, "registry-api")["SKIFF_GPU_INFERENCE_IMAGE_URI"] == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.6-gpu-py312"
    )


def test_gpu_endpoint_code_is_uploaded_file_by_file_where_the_functions_copy_it_from(bundle_dir: Path) -> None:
    from tests.infra.conftest import ENDPOINT_CODE

    stack = run_program(bundle_dir, gpu_endpoint=True, gpu_inference_image_uri=GPU_IMAGE)
    artifacts = stack.named("aws:s3/bucket:Bucket", "storage-artifacts").outputs["bucket"]
    keys = sorted(o.inputs["key"] for o in stack.of_type("aws:s3/bucketObjectv2:BucketObjectv2") if "gpu" in o.name)
    assert keys == sorted(f"serving/code/{name}" for name in ENDPOINT_CODE)
    assert env(stack, "registry-api")["SKIFF_GPU_ENDPOINT_CODE_URI"] == f"s3://{artifacts}/serving/code/"


def test_gpu_endpoint_state_changes_reach_the_completion_function_with_a_watched_dlq(bundle_dir: Path) -> None:
    from skiff.serve.gpu_endpoint import endpoint_event_pattern

    stack = run_program(bundle_dir, gpu_endpoint=True, gpu_inference_image_uri=GPU_IMAGE)
    rule = stack.named("aws:cloudwatch/eventRule:EventRule", "gpu-endpoint-state")
    assert rule.json("eventPattern") == endpoint_event_pattern("skiff-test-gpu")
    target = stack.named("aws:cloudwatch/eventTarget:EventTarget", "gpu-endpoint-state-target")
    assert target.inputs["arn"] == function(stack, "training-events").outputs["arn"]
    dlq = stack.named("aws:sqs/queue:Queue", "gpu-endpoint-events-dlq")
    assert target.inputs["deadLetterConfig"]["arn"] == dlq.outputs["arn"]
    alarm = stack.one(
        "aws:cloudwatch/metricAlarm:MetricAlarm", lambda a: a.inputs["name"].endswith("gpu-endpoint-events-dlq-depth")
    )
    assert alarm.inputs["dimensions"] == {"QueueName": dlq.outputs["name"]}


def test_gpu_endpoint_role_reads_served_folders_and_its_logs_expire(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, gpu_endpoint=True, gpu_inference_image_uri=GPU_IMAGE)
    policy = stack.named("aws:iam/rolePolicy:RolePolicy", "gpu-endpoint-policy")
    listing = [s for s in statements(policy) if s["Action"] == ["s3:ListBucket"]]
    assert [s["Condition"] for s in listing] == [{"StringLike": {"s3:prefix": ["models/*"]}}]
    logs = stack.named("aws:cloudwatch/logGroup:LogGroup", "gpu-endpoint-logs")
    assert (logs.inputs["name"], logs.inputs["retentionInDays"]) == ("/aws/sagemaker/Endpoints/skiff-test-gpu", 30)


@pytest.mark.parametrize(
    ("prefix", "rule"),
    [
        ("", "1 to 40 characters"),
        ("a" * 41, "1 to 40 characters"),
        ("my.stack", "only lowercase letters, digits and hyphens"),
        ("my_stack", "only lowercase letters, digits and hyphens"),
        ("MyStack", "only lowercase letters, digits and hyphens"),
        ("1stack", "a lowercase letter first"),
        ("-stack", "a lowercase letter first"),
        ("stack-", "no hyphen at the end"),
    ],
)
def test_a_prefix_that_breaks_a_naming_rule_is_refused_at_preview(prefix: str, rule: str) -> None:
    from infra.settings import StackSettings
    from skiff.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"skiff:prefix should have {rule}.*\(got: {re.escape(repr(prefix))}\)"):
        StackSettings(prefix=prefix)


def test_a_valid_prefix_is_accepted() -> None:
    from infra.settings import StackSettings

    assert StackSettings(prefix="skiff-prod-2").prefix == "skiff-prod-2"


# ---- notifications ----------------------------------------------------------------------


def test_the_notifications_topic_is_encrypted_with_the_stack_key(stack: Deployed) -> None:
    topic = stack.one("aws:sns/topic:Topic")
    assert topic.inputs["name"] == "skiff-test-notifications"
    assert topic.inputs["kmsMasterKeyId"] == stack.one("aws:kms/key:Key").outputs["arn"]
    assert stack.outputs["notifications_topic_arn"] == topic.outputs["arn"]


def test_only_this_stacks_alarms_in_this_account_may_publish_to_the_topic(stack: Deployed) -> None:
    (allow,) = statements(stack.one("aws:sns/topicPolicy:TopicPolicy"))
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and allow["Action"] == ["sns:Publish"]
    assert allow["Condition"] == {
        "ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:skiff-test-*"},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }


def test_cloudwatch_may_use_the_key_for_this_account_only(stack: Deployed) -> None:
    policy = stack.one("aws:kms/key:Key").json("policy")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["AccountAdministersThroughIam"]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    cloudwatch = by_sid["CloudWatchAlarmsToTheEncryptedTopic"]
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_every_alarm_is_told_to_the_topic(stack: Deployed) -> None:
    topic_arn = stack.one("aws:sns/topic:Topic").outputs["arn"]
    alarms = stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert {a.inputs["name"] for a in alarms} >= {
        "skiff-test-upload-dlq-depth",
        "skiff-test-alarm-rollback-dlq-depth",
        "skiff-test-inference-5xx-rate",
    }
    assert all(a.inputs["alarmActions"] == [topic_arn] for a in alarms)


@pytest.mark.parametrize("short", ["training-events", "alarm-rollback", "registry-api"])
def test_functions_that_move_production_or_judge_candidates_may_notify(stack: Deployed, short: str) -> None:
    topic_arn = stack.one("aws:sns/topic:Topic").outputs["arn"]
    assert env(stack, short)["SKIFF_NOTIFICATIONS_TOPIC_ARN"] == topic_arn
    assert env(stack, short)["SKIFF_STACK"] == "skiff-test"
    policy = stack.one("aws:iam/rolePolicy:RolePolicy", lambda r: r.name.endswith(f"{short}-policy"))
    assert {"Effect": "Allow", "Action": ["sns:Publish"], "Resource": [topic_arn]} in statements(policy)


def test_no_email_is_subscribed_unless_configured(stack: Deployed, bundle_dir: Path) -> None:
    assert stack.of_type("aws:sns/topicSubscription:TopicSubscription") == []
    configured = run_program(bundle_dir, notification_email="ops@example.com")
    (subscription,) = configured.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert (subscription.inputs["protocol"], subscription.inputs["endpoint"]) == ("email", "ops@example.com")


# ---- observability ------------------------------------------------------------------------


def test_every_function_is_traced_by_x_ray(stack: Deployed) -> None:
    functions = stack.of_type("aws:lambda/function:Function")
    assert len(functions) == 5
    for fn in functions:
        assert fn.inputs["tracingConfig"] == {"mode": "Active"}
        assert fn.inputs["environment"]["variables"]["POWERTOOLS_TRACE_DISABLED"] == "false"
    traced = [
        p
        for p in stack.of_type("aws:iam/rolePolicy:RolePolicy")
        if any("xray:PutTraceSegments" in as_list(s["Action"]) for s in statements(p))
    ]
    assert len(traced) == 5


def test_tracing_can_be_turned_off(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, tracing=False)
    for fn in stack.of_type("aws:lambda/function:Function"):
        assert fn.inputs["tracingConfig"] == {"mode": "PassThrough"}
        assert fn.inputs["environment"]["variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"


def dashboard(stack: Deployed) -> dict[str, Any]:
    return json.loads(stack.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])


def test_the_dashboard_shows_serving_training_changes_dead_letters_and_alarms(stack: Deployed) -> None:
    titles = [w["properties"]["title"] for w in dashboard(stack)["widgets"]]
    assert titles == [
        "API requests and errors",
        "Prediction latency per model version (p50, p99)",
        "Inference function",
        "Uploads and training jobs",
        "Gate verdicts and production changes",
        "Dead-letter queues (messages waiting)",
        "skiff-test alarms",
    ]
    assert stack.outputs["dashboard_url"].endswith("#dashboards/dashboard/skiff-test")


def test_the_dashboard_splits_latency_by_model_version_as_the_inference_function_emits_it(stack: Deployed) -> None:
    latency = dashboard(stack)["widgets"][1]["properties"]["metrics"]
    expressions = [m[0]["expression"] for m in latency]
    assert all("{Skiff,model_version,service}" in e and 'MetricName="PredictLatency"' in e for e in expressions)
    assert [e.rsplit("'", 2)[1] for e in expressions] == ["p50", "p99"]
    # What the inference function emits per version: the same namespace, dimensions and name.
    import contextlib
    import io

    from functions.inference.handler import record_latency_of_version

    emitted = io.StringIO()
    with contextlib.redirect_stdout(emitted):
        for _ in range(2):  # the second record keeps the version's dimension too
            record_latency_of_version("v-test", 1.5)
    records = [json.loads(line) for line in emitted.getvalue().splitlines()]
    assert len(records) == 2
    for record in records:
        (schema,) = record["_aws"]["CloudWatchMetrics"]
        assert schema["Namespace"] == "Skiff" and sorted(schema["Dimensions"][0]) == ["model_version", "service"]
        assert [m["Name"] for m in schema["Metrics"]] == ["PredictLatency"] and record["model_version"] == "v-test"


def test_the_dashboard_watches_every_dead_letter_queue_and_every_alarm(stack: Deployed) -> None:
    widgets = dashboard(stack)["widgets"]
    queues = {m[3] for m in widgets[5]["properties"]["metrics"]}
    assert queues == {q.outputs["name"] for q in stack.of_type("aws:sqs/queue:Queue") if q.name.endswith("dlq")}
    alarms = {a.outputs["arn"] for a in stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(widgets[6]["properties"]["alarms"]) == alarms


def test_the_inference_function_reserves_no_concurrency_by_default(stack: Deployed) -> None:
    assert function(stack, "inference").inputs.get("reservedConcurrentExecutions") is None


def test_the_inference_function_reserves_the_configured_concurrency(bundle_dir: Path) -> None:
    stack = run_program(bundle_dir, reserved_concurrency=50)
    assert function(stack, "inference").inputs["reservedConcurrentExecutions"] == 50
    assert function(stack, "registry-api").inputs.get("reservedConcurrentExecutions") is None
