"""GpuEndpoint (optional): the role, code and log group of a SageMaker GPU endpoint that follows production.

The endpoint, its Models and EndpointConfigs are created at run time by skiff.serve.gpu_endpoint
when a version is promoted (which model it serves changes with every promotion, and Pulumi
would revert that). This component gives the functions that change production what they need
to move it: names, the endpoint's execution role, its code/ (uploaded here, copied into each
served version's folder), and narrow permissions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.functions import ProductionFollowers
from infra.policies import objects, sagemaker_container_statements, service_role, statement
from skiff.serve.gpu_endpoint import endpoint_event_pattern

CODE_PREFIX = "serving/code/"


@dataclass(frozen=True)
class GpuEndpointArgs:
    prefix: str
    account_id: str
    region: str
    image_uri: str
    instance_type: str
    code_dir: str  # skiff.packaging.bundle.build_endpoint_code's output
    artifacts_bucket: aws.s3.Bucket
    key: aws.kms.Key
    log_retention_days: int = 30


class GpuEndpoint(pulumi.ComponentResource):
    def __init__(self, name: str, args: GpuEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:GpuEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        endpoint_name = f"{args.prefix}-gpu"
        log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
        code_dir = Path(args.code_dir)
        self.code = [
            aws.s3.BucketObjectv2(
                f"{name}-code-{re.sub(r'[^A-Za-z0-9.-]', '-', str(path.relative_to(code_dir)))}",
                bucket=args.artifacts_bucket.id,
                key=f"{CODE_PREFIX}{path.relative_to(code_dir).as_posix()}",
                source=pulumi.FileAsset(str(path)),
                opts=child,
            )
            for path in sorted(p for p in code_dir.rglob("*") if p.is_file())
        ]
        # SageMaker would create it on first use with no retention; created here, it expires.
        self.logs = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=log_group, retention_in_days=args.log_retention_days, opts=child
        )
        self.role = service_role(
            name,
            "sagemaker.amazonaws.com",
            [
                # The served version's folder (artifact + code/) is downloaded as it is: a listing, then reads.
                statement(["s3:GetObject"], objects(args.artifacts_bucket, "models/")),
                statement(
                    ["s3:ListBucket"],
                    [args.artifacts_bucket.arn],
                    Condition={"StringLike": {"s3:prefix": ["models/*"]}},
                ),
                statement(["kms:Decrypt"], [args.key.arn]),
                *sagemaker_container_statements(
                    args.region, args.account_id, args.image_uri, log_group, "/aws/sagemaker/Endpoints"
                ),
            ],
            child,
            source_account=args.account_id,
        )
        arn = f"arn:aws:sagemaker:{args.region}:{args.account_id}"
        self.followers = ProductionFollowers(
            environment={
                "SKIFF_GPU_ENDPOINT_NAME": endpoint_name,
                "SKIFF_GPU_ENDPOINT_ROLE_ARN": self.role.arn,
                "SKIFF_GPU_INFERENCE_IMAGE_URI": args.image_uri,
                "SKIFF_GPU_ENDPOINT_CODE_URI": pulumi.Output.concat(
                    "s3://", args.artifacts_bucket.bucket, "/", CODE_PREFIX
                ),
                "SKIFF_GPU_INSTANCE_TYPE": args.instance_type,
                "SKIFF_KMS_KEY_ARN": args.key.arn,
            },
            statements=[
                statement(
                    [
                        "sagemaker:CreateModel",
                        "sagemaker:CreateEndpointConfig",
                        "sagemaker:CreateEndpoint",
                        "sagemaker:UpdateEndpoint",
                        "sagemaker:DescribeEndpoint",
                        "sagemaker:AddTags",
                    ],
                    [
                        f"{arn}:model/{endpoint_name}-*",
                        f"{arn}:endpoint-config/{endpoint_name}-*",
                        f"{arn}:endpoint/{endpoint_name}",
                    ],
                ),
                statement(
                    ["iam:PassRole"],
                    [self.role.arn],
                    Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                ),
                # Copying code/ into the version's folder at its first promotion.
                statement(
                    ["s3:ListBucket"],
                    [args.artifacts_bucket.arn],
                    Condition={"StringLike": {"s3:prefix": [f"{CODE_PREFIX}*"]}},
                ),
                statement(["s3:GetObject"], objects(args.artifacts_bucket, CODE_PREFIX)),
                statement(["s3:PutObject"], objects(args.artifacts_bucket, "models/*/code/")),
                statement(["kms:Decrypt", "kms:GenerateDataKey"], [args.key.arn]),
                # SageMaker encrypts an endpoint's EBS volume through a grant made for the caller.
                statement(
                    ["kms:CreateGrant"], [args.key.arn], Condition={"Bool": {"kms:GrantIsForAWSResource": "true"}}
                ),
            ],
            # Whether an update took: recorded on the version, a failure notified (skiff.serve.gpu_endpoint).
            event_pattern=endpoint_event_pattern(endpoint_name),
        )
        self.register_outputs({"endpoint_name": endpoint_name, "role_arn": self.role.arn})
