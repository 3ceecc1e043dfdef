"""Puts envelopes into the analytics stream (Kinesis PutRecords), for RecordInteractions,
RecordOrder and the bus forwarder alike.

PutRecords answers per record: a partial failure (throttling of one shard, an internal
failure) retries only the records that failed, with exponential backoff and jitter. What
still fails after the last attempt is raised as RESOURCE_EXHAUSTED (the stream is
throttling) or UNAVAILABLE (it failed otherwise): the caller retries, never INTERNAL.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from cloudshelf.runtime.errors import STORE_THROTTLED, DomainError, Unavailable
from services.analytics.records import MAX_RECORD_BYTES, encode, partition_key

# Kinesis PutRecords: at most 500 records and 5 MiB per request.
PUT_RECORDS_MAX_ENTRIES = 500
PUT_RECORDS_MAX_BYTES = 5 * 1024 * 1024
THROTTLED = "ProvisionedThroughputExceededException"


class StreamThrottled(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = STORE_THROTTLED


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.05
    max_delay: float = 1.0

    def delay(self, attempt: int) -> float:
        delay: float = min(self.first_delay * 2**attempt, self.max_delay)
        return delay * random.uniform(0.5, 1.0)


def envelope_partition_key(envelope: Mapping[str, Any]) -> str:
    """The partition key of a forwarded envelope: the user, else the session, of its data
    or of an object directly inside it (an order event's `order`, a review event's
    `review`), else its subject."""
    data = envelope.get("data")
    data = data if isinstance(data, Mapping) else {}

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    subject = text(envelope.get("subject"))
    for holder in (data, *(v for v in data.values() if isinstance(v, Mapping))):
        user, session = text(holder.get("user_id")), text(holder.get("session_id"))
        if user or session:
            return partition_key(user, session, subject)
    return partition_key("", "", subject)


def put_records_chunks(sizes: Sequence[int]) -> list[list[int]]:
    """Positions grouped, in order, into requests of at most 500 records and 5 MiB."""
    chunks: list[list[int]] = []
    chunk: list[int] = []
    total = 0
    for position, size in enumerate(sizes):
        if chunk and (
            len(chunk) == PUT_RECORDS_MAX_ENTRIES or total + size > PUT_RECORDS_MAX_BYTES
        ):
            chunks.append(chunk)
            chunk, total = [], 0
        chunk.append(position)
        total += size
    if chunk:
        chunks.append(chunk)
    return chunks


class StreamWriter:
    def __init__(self, kinesis: Any, stream: str, policy: RetryPolicy | None = None) -> None:
        self.kinesis = kinesis
        self.stream = stream
        self.policy = policy or RetryPolicy()

    async def put(self, envelopes: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
        """Puts every envelope (with its partition key) into the stream, or raises."""
        entries: list[dict[str, Any]] = []
        sizes: list[int] = []
        for envelope, key in zip(envelopes, keys, strict=True):
            data = encode(envelope)
            size = len(data) + len(key.encode())
            if size > MAX_RECORD_BYTES:
                raise ValueError("an envelope is larger than a Kinesis record (1 MiB)")
            entries.append({"Data": data, "PartitionKey": key})
            sizes.append(size)
        for chunk in put_records_chunks(sizes):
            await self._put_all([entries[p] for p in chunk])

    async def _put_all(self, entries: list[dict[str, Any]]) -> None:
        pending = entries
        codes: set[str] = set()
        for attempt in range(self.policy.attempts):
            if attempt:
                await asyncio.sleep(self.policy.delay(attempt - 1))
            answer = await self.kinesis.put_records(StreamName=self.stream, Records=pending)
            if not answer.get("FailedRecordCount"):
                return
            failed = [
                (entry, result.get("ErrorCode", ""))
                for entry, result in zip(pending, answer["Records"], strict=True)
                if result.get("ErrorCode")
            ]
            if not failed:
                return
            pending = [entry for entry, _ in failed]
            codes = {code for _, code in failed}
        what = f"{len(pending)} records not accepted by the stream {self.stream}"
        if THROTTLED in codes:
            raise StreamThrottled(
                f"{what}: it is throttling; retry with backoff",
                metadata={"stream": self.stream, "aws_error_code": THROTTLED},
            )
        raise Unavailable(
            f"{what} ({', '.join(sorted(codes))}); retry later",
            reason="STORE_UNAVAILABLE",
            metadata={"stream": self.stream},
        )
