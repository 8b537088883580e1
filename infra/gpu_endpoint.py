"""GpuEndpoint (optional): the role and source for a SageMaker GPU endpoint that follows production.

The endpoint, its Models and EndpointConfigs are created at run time by skiff.serve.gpu_endpoint
when a version is promoted (which model it serves changes with every promotion, and Pulumi
would revert that). This component gives the functions that change production what they need
to move it: names, the endpoint's execution role, the serving source, and narrow permissions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.functions import ProductionFollowers
from infra.policies import objects, sagemaker_container_statements, service_role, statement
from infra.storage import source_object


@dataclass(frozen=True)
class GpuEndpointArgs:
    prefix: str
    account_id: str
    region: str
    image_uri: str
    instance_type: str
    serving_source_path: str
    artifacts_bucket: aws.s3.Bucket
    key: aws.kms.Key


class GpuEndpoint(pulumi.ComponentResource):
    def __init__(self, name: str, args: GpuEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:GpuEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        endpoint_name = f"{args.prefix}-gpu"
        self.source = source_object(
            f"{name}-serving-source",
            args.artifacts_bucket,
            "source/serving-sourcedir.tar.gz",
            args.serving_source_path,
            child,
        )
        self.role = service_role(
            name,
            "sagemaker.amazonaws.com",
            [
                statement(["s3:GetObject"], objects(args.artifacts_bucket, "jobs/", "source/")),
                statement(["kms:Decrypt"], [args.key.arn]),
                *sagemaker_container_statements(
                    args.region,
                    args.account_id,
                    args.image_uri,
                    f"/aws/sagemaker/Endpoints/{endpoint_name}",
                    "/aws/sagemaker/Endpoints",
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
                "SKIFF_GPU_SERVING_SOURCE_URI": pulumi.Output.concat(
                    "s3://", args.artifacts_bucket.bucket, "/", self.source.key
                ),
                "SKIFF_GPU_INSTANCE_TYPE": args.instance_type,
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
            ],
        )
        self.register_outputs({"endpoint_name": endpoint_name, "role_arn": self.role.arn})
