"""Small helpers for DynamoDB's typed wire format, shared by the registry and the catalogs.

DynamoDB has no floats: numbers travel as Decimal. JSON is the neutral ground both ways.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError


def to_item(body: Mapping[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    plain = json.loads(json.dumps(body), parse_float=Decimal)
    serializer = TypeSerializer()
    return {k: serializer.serialize(v) for k, v in plain.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    plain = {k: deserializer.deserialize(v) for k, v in item.items()}
    return json.loads(json.dumps(plain, default=lambda d: int(d) if d == d.to_integral_value() else float(d)))


def values(**named: Any) -> dict[str, Any]:
    """ExpressionAttributeValues from keyword arguments: ``values(rev=3)`` -> ``{":rev": {"N": "3"}}``."""
    return {f":{k}": v for k, v in to_item(named).items()}


def cancelled(exc: ClientError) -> bool:
    """A condition failed (single write) or a transaction was cancelled by one."""
    return exc.response["Error"]["Code"] in ("TransactionCanceledException", "ConditionalCheckFailedException")


def get(dynamodb: Any, table: str, pk: str, sk: str) -> dict[str, Any] | None:
    response = dynamodb.get_item(TableName=table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True)
    return from_item(response["Item"]) if "Item" in response else None
