"""The analytics stream writer's PutRecords handling (services/analytics/stream_writer.py):
partial failures retried alone, what the caller is answered when the stream keeps failing.
moto never fails a record, so the Kinesis answers are scripted here."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from cloudshelf.runtime.errors import status_for
from services.analytics.stream_writer import (
    THROTTLED,
    RetryPolicy,
    StreamWriter,
    envelope_partition_key,
    put_records_chunks,
)


class ScriptedKinesis:
    """Answers PutRecords with the failures scripted per call ({position: code})."""

    def __init__(self, *failures: dict[int, str]) -> None:
        self.failures = list(failures)
        self.calls: list[list[dict[str, Any]]] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Records)
        failed = self.failures.pop(0) if self.failures else {}
        assert all(position < len(Records) for position in failed)
        return {
            "FailedRecordCount": len(failed),
            "Records": [
                {"ErrorCode": failed[i], "ErrorMessage": "scripted"}
                if i in failed
                else {"SequenceNumber": str(i), "ShardId": "shardId-000000000000"}
                for i in range(len(Records))
            ],
        }


def _writer(kinesis: ScriptedKinesis) -> StreamWriter:
    return StreamWriter(kinesis, "stream", RetryPolicy(attempts=3, first_delay=0.001))


def _envelopes(count: int) -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "type": "t", "data": {}} for i in range(count)]


def test_only_the_failed_records_of_a_partial_failure_are_sent_again() -> None:
    kinesis = ScriptedKinesis({0: THROTTLED, 2: "InternalFailure"})
    asyncio.run(_writer(kinesis).put(_envelopes(3), ["a", "b", "c"]))
    assert [[r["PartitionKey"] for r in call] for call in kinesis.calls] == [
        ["a", "b", "c"],
        ["a", "c"],
    ]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (THROTTLED, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("InternalFailure", grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_a_stream_that_keeps_failing_is_answered_retryably(
    code: str, status: grpc.StatusCode
) -> None:
    kinesis = ScriptedKinesis({1: code}, {0: code}, {0: code})
    with pytest.raises(Exception) as failed:
        asyncio.run(_writer(kinesis).put(_envelopes(2), ["a", "b"]))
    assert len(kinesis.calls) == 3
    mapped = status_for(failed.value)
    assert mapped is not None and mapped.code == status


def test_requests_hold_at_most_500_records_and_5_mib() -> None:
    assert [len(c) for c in put_records_chunks([10] * 1001)] == [500, 500, 1]
    mib = 1024 * 1024
    assert put_records_chunks([2 * mib, 2 * mib, 2 * mib, 10]) == [[0, 1], [2, 3]]


def test_a_forwarded_envelope_is_keyed_by_user_then_session_then_subject() -> None:
    assert (
        envelope_partition_key({"subject": "7", "data": {"user_id": "u", "session_id": "s"}}) == "u"
    )
    assert envelope_partition_key({"subject": "7", "data": {"session_id": "s"}}) == "s"
    assert envelope_partition_key({"subject": "7", "data": {"user_id": 5}}) == "7"
    assert envelope_partition_key({"data": "not an object"}) == "-"
    # An order event's user is inside its order.
    order = {"subject": "o-1", "data": {"order": {"id": "o-1", "user_id": "u"}}}
    assert envelope_partition_key(order) == "u"
