"""Idempotent creation of AWS resources, the same against real AWS and the local emulator.

Services declare what they need (table definitions, stream names) and call these from their
`provision` step; a resource that already exists is left as it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import ClientError


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


async def ensure_dynamodb_table(
    dynamodb: Any, definition: dict[str, Any], ttl_attribute: str | None
) -> bool:
    """Creates the table (and its TTL setting) unless it exists; True when created."""
    name = definition["TableName"]
    try:
        await dynamodb.create_table(**definition)
        created = True
    except ClientError as exc:
        if _error_code(exc) != "ResourceInUseException":
            raise
        created = False
    waiter = dynamodb.get_waiter("table_exists")
    await waiter.wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if ttl_attribute:
        current = await dynamodb.describe_time_to_live(TableName=name)
        if current["TimeToLiveDescription"].get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            await dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute},
            )
    return created


async def ensure_kinesis_stream(kinesis: Any, name: str, shards: int) -> bool:
    try:
        await kinesis.create_stream(StreamName=name, ShardCount=shards)
        created = True
    except ClientError as exc:
        if _error_code(exc) != "ResourceInUseException":
            raise
        created = False
    for _ in range(60):
        summary = await kinesis.describe_stream_summary(StreamName=name)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return created
        await asyncio.sleep(1)
    raise TimeoutError(f"kinesis stream {name} did not become ACTIVE")


async def ensure_bucket(s3: Any, name: str, region: str) -> bool:
    try:
        await s3.head_bucket(Bucket=name)
        return False
    except ClientError as exc:
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    params: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":  # us-east-1 rejects an explicit location constraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    await s3.create_bucket(**params)
    return True


async def ensure_timestream_table(
    timestream: Any,
    database: str,
    table: str,
    retention: dict[str, int],
    *,
    magnetic_store_writes: bool = False,
) -> bool:
    """Creates the table (and its database) unless it exists. With magnetic_store_writes,
    records older than the memory store's retention are accepted (into the magnetic
    store) instead of rejected."""
    # Asked first: moto's CreateDatabase replaces an existing database (and drops its
    # tables) instead of answering ConflictException as Timestream does.
    try:
        await timestream.describe_database(DatabaseName=database)
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
        try:
            await timestream.create_database(DatabaseName=database)
        except ClientError as conflict:
            if _error_code(conflict) != "ConflictException":
                raise
    try:
        await timestream.create_table(
            DatabaseName=database,
            TableName=table,
            RetentionProperties=retention,
            MagneticStoreWriteProperties={"EnableMagneticStoreWrites": magnetic_store_writes},
        )
        return True
    except ClientError as exc:
        if _error_code(exc) != "ConflictException":
            raise
        return False


async def ensure_event_bus(events: Any, name: str) -> bool:
    try:
        await events.create_event_bus(Name=name)
        return True
    except ClientError as exc:
        if _error_code(exc) != "ResourceAlreadyExistsException":
            raise
        return False
