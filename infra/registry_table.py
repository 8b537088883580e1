"""Registry: the one DynamoDB table for versions, the production alias, datasets and job state."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class RegistryArgs:
    prefix: str
    kms_key_arn: pulumi.Input[str]
    deletion_protection: bool = True


class RegistryTable(pulumi.ComponentResource):
    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("skiff:index:Registry", name, None, opts)
        self.table = aws.dynamodb.Table(
            f"{name}-table",
            name=f"{args.prefix}-registry",
            billing_mode="PAY_PER_REQUEST",
            hash_key="pk",
            range_key="sk",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="pk", type="S"),
                aws.dynamodb.TableAttributeArgs(name="sk", type="S"),
            ],
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(
                enabled=True, kms_key_arn=args.kms_key_arn
            ),
            # Powertools idempotency records carry this attribute; DynamoDB removes them when due.
            ttl=aws.dynamodb.TableTtlArgs(attribute_name="expiration", enabled=True),
            deletion_protection_enabled=args.deletion_protection,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"table_name": self.table.name, "table_arn": self.table.arn})
