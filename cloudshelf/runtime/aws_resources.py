"""Idempotent creation of AWS resources, the same against real AWS and the local emulator.

Services declare what they need (table definitions, stream names) and call these from their
`provision` step; a table, stream or bucket that already exists is left as it is, while
queues, rules and queue policies are brought to what is declared.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Queue:
    url: str
    arn: str


async def _queue_url(sqs: Any, name: str) -> str | None:
    try:
        return str((await sqs.get_queue_url(QueueName=name))["QueueUrl"])
    except ClientError as exc:
        if _error_code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        return None


async def _ensure_plain_queue(sqs: Any, name: str, attributes: dict[str, str]) -> Queue:
    """The queue, created if absent; its attributes set to `attributes` either way, so a
    changed setting reaches a queue made by an older release."""
    url = await _queue_url(sqs, name)
    if url is None:
        url = str((await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"])
    elif attributes:
        await sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return Queue(url, str(answer["Attributes"]["QueueArn"]))


async def ensure_queue(
    sqs: Any,
    name: str,
    *,
    max_receive_count: int = 5,
    visibility_timeout: int = 60,
    dead_letter_retention: int = 14 * 24 * 3600,
) -> tuple[Queue, Queue]:
    """An SQS queue and its dead-letter queue `<name>-dlq`: a message received
    `max_receive_count` times without being deleted moves there (SQS's redrive), so a
    message no consumer can handle stops coming back and is kept for an operator
    (`dead_letter_retention` seconds, SQS's maximum by default). Returns (queue, DLQ)."""
    dead_letters = await _ensure_plain_queue(
        sqs, f"{name}-dlq", {"MessageRetentionPeriod": str(dead_letter_retention)}
    )
    redrive = {"deadLetterTargetArn": dead_letters.arn, "maxReceiveCount": max_receive_count}
    queue = await _ensure_plain_queue(
        sqs,
        name,
        {
            "RedrivePolicy": json.dumps(redrive, separators=(",", ":")),
            # Longest a consumer may hold a message before another one gets it.
            "VisibilityTimeout": str(visibility_timeout),
        },
    )
    return queue, dead_letters


async def ensure_rule_to_queue(
    events: Any,
    sqs: Any,
    *,
    bus: str,
    rule: str,
    pattern: dict[str, Any],
    queue: Queue,
) -> str:
    """An EventBridge rule on `bus` that sends the events matching `pattern` to `queue`,
    and the queue policy that lets EventBridge send for that rule (other statements of
    the policy are kept, so several rules may feed one queue). Returns the rule's ARN."""
    rule_arn = str(
        (
            await events.put_rule(
                Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED"
            )
        )["RuleArn"]
    )
    await events.put_targets(
        Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue.arn}]
    )
    answer = await sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["Policy"])
    current = answer.get("Attributes", {}).get("Policy")
    policy: dict[str, Any] = (
        json.loads(current) if current else {"Version": "2012-10-17", "Statement": []}
    )
    sid = f"events-{rule}"
    statements = [s for s in policy.get("Statement", []) if s.get("Sid") != sid]
    statements.append(
        {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue.arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }
    )
    policy["Statement"] = statements
    await sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"Policy": json.dumps(policy)})
    return rule_arn
