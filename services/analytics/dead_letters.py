"""ListDeadLetters: the records the consumer set aside (analytics.dead_letters), newest
first, in pages of the runtime's signed tokens."""

from __future__ import annotations

import asyncpg

from cloudshelf.analytics.v1 import analytics_pb2
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.paging import Int, decode_page_token, split_page

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_PAGE_SHAPE = {"before": Int(1, 2**63 - 1)}
_QUERY = {"rpc": "ListDeadLetters"}


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative (0: the default)")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _message(row: asyncpg.Record) -> analytics_pb2.DeadLetter:
    letter = analytics_pb2.DeadLetter(
        stream_name=row["stream_name"],
        shard_id=row["shard_id"],
        sequence_number=row["sequence_number"],
        data=bytes(row["data"]),
        reason=row["reason"],
        event_id=row["event_id"] or "",
        event_type=row["event_type"] or "",
    )
    letter.arrival_time.FromDatetime(row["arrival_time"])
    letter.dead_letter_time.FromDatetime(row["dead_letter_time"])
    return letter


async def list_dead_letters(
    pool: asyncpg.Pool, request: analytics_pb2.ListDeadLettersRequest
) -> analytics_pb2.ListDeadLettersResponse:
    size = page_size(request.page_size)
    position = decode_page_token(request.page_token, _QUERY, _PAGE_SHAPE)
    before = 2**63 - 1 if position is None else int(position["before"])
    rows = await pool.fetch(
        "SELECT id, stream_name, shard_id, sequence_number, data, reason, event_id, "
        "event_type, arrival_time, dead_letter_time FROM analytics.dead_letters "
        "WHERE id < $1 ORDER BY id DESC LIMIT $2",
        before,
        size + 1,
    )
    page, token = split_page(rows, size, lambda row: {"before": row["id"]}, _QUERY)
    return analytics_pb2.ListDeadLettersResponse(
        dead_letters=[_message(row) for row in page], next_page_token=token
    )
