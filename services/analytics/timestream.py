"""Cart events into Timestream, as the seed writes them: database CloudShelfAnalytics
(settings.timestream_database), table CartEvents, dimensions EventType and BookCategory,
measure CartValue.

Which events, and what CartValue is (the events carry lines, not the cart's total): the
change the event made to the value of carts, in integer minor units of the line's
currency (the warehouse's rule: money is never a float), so summing CartValue over a
period gives the value added to carts, and order.placed gives what carts turned into:
- cart.item.added: + unit price x quantity;
- cart.item.updated: unit price x (quantity - previous quantity), negative for fewer;
- cart.item.removed: - unit price x previous quantity;
- cart.cleared: - the value of every removed line;
- cart.merged: + unit price x the copies the merge added;
- order.placed: + every order line's total (the value that was checked out).
An event whose lines span categories is one record per category. Other event types are
not cart events and are skipped.

Two deliberate additions to the seed's record: a third dimension, Currency (amounts in
two currencies must not be summed), and MeasureValueType BIGINT (minor units). The
category is the book's category_name in the warehouse's dim_books (kept in sync from
catalog events), "unknown" when the book is not there, as in the seed.

Idempotence: Timestream keeps one record per (dimensions, time, measure name); writing the
same record again with the same Version is accepted and changes nothing. A record's time
is the event's occurred_at to the millisecond, plus a sub-millisecond offset in
nanoseconds derived from the event id, so two events of the same millisecond with the same
dimensions stay two records (a collision takes the same 1 in 10^6 offset) while a rewrite
of one event is the same record; Version is always 1. A replay after a book changed
category writes the new category's record beside the old one: the dimension is looked up,
not in the event.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import asyncpg
from botocore.exceptions import ClientError

from services.analytics.lake import event_time
from services.analytics.records import StreamEvent

log = logging.getLogger(__name__)

CART_EVENTS_TABLE = "CartEvents"
MEASURE = "CartValue"
# Timestream's WriteRecords takes at most 100 records.
MAX_RECORDS_PER_WRITE = 100
RECORD_VERSION = 1
UNKNOWN_CATEGORY = "unknown"


class BookCategories(Protocol):
    async def categories(self, book_ids: Sequence[int]) -> Mapping[int, str]: ...


class WarehouseCategories:
    """Categories from analytics.dim_books."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def categories(self, book_ids: Sequence[int]) -> Mapping[int, str]:
        rows = await self.pool.fetch(
            "SELECT book_id, category_name FROM analytics.dim_books "
            "WHERE book_id = ANY($1::int[]) AND category_name IS NOT NULL",
            list(book_ids),
        )
        return {row["book_id"]: row["category_name"] for row in rows}


def _int(value: Any) -> int:
    """An int32/int64 of the proto JSON form (int64 arrives as a string)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _money(value: Any) -> tuple[int, str]:
    if not isinstance(value, Mapping):
        return 0, ""
    return _int(value.get("minor_units")), str(value.get("currency_code") or "")


def line_changes(event: StreamEvent) -> Iterator[tuple[int, int, str]]:
    """(book id, signed value in minor units, currency) of each line the event changed;
    nothing for events that are not cart events."""
    data = event.data
    kind = event.type
    if kind in ("cart.item.added", "cart.item.updated", "cart.item.removed"):
        price, currency = _money(data.get("unit_price"))
        quantity = _int(data.get("quantity"))
        previous = _int(data.get("previous_quantity"))
        copies = {"cart.item.added": quantity, "cart.item.updated": quantity - previous}.get(
            kind, -previous
        )
        yield _int(data.get("book_id")), price * copies, currency
    elif kind in ("cart.cleared", "cart.merged"):
        lines = data.get("removed" if kind == "cart.cleared" else "merged") or []
        for line in lines if isinstance(lines, list) else []:
            if not isinstance(line, Mapping):
                continue
            price, currency = _money(line.get("unit_price"))
            if kind == "cart.cleared":
                yield _int(line.get("book_id")), -price * _int(line.get("quantity")), currency
            else:
                yield _int(line.get("book_id")), price * _int(line.get("added_quantity")), currency
    elif kind == "order.placed":
        order = data.get("order")
        lines = order.get("lines") if isinstance(order, Mapping) else None
        for line in lines if isinstance(lines, list) else []:
            if isinstance(line, Mapping):
                total, currency = _money(line.get("line_total"))
                yield _int(line.get("book_id")), total, currency


def record_time_ns(event: StreamEvent) -> int:
    """The event's time in nanoseconds: its millisecond, plus an offset below a millisecond
    that only its id decides."""
    when = event_time(event)
    millis = int(when.timestamp() * 1000)
    offset = int.from_bytes(hashlib.blake2b(event.id.encode(), digest_size=8).digest()) % 10**6
    return millis * 10**6 + offset


def cart_records(event: StreamEvent, categories: Mapping[int, str]) -> list[dict[str, Any]]:
    """The Timestream records of one event: one per (category, currency) it changed."""
    values: dict[tuple[str, str], int] = {}
    for book_id, value, currency in line_changes(event):
        key = (categories.get(book_id, UNKNOWN_CATEGORY), currency or "XXX")
        values[key] = values.get(key, 0) + value
    time = str(record_time_ns(event))
    return [
        {
            "Dimensions": [
                {"Name": "EventType", "Value": event.type},
                {"Name": "BookCategory", "Value": category},
                {"Name": "Currency", "Value": currency},
            ],
            "MeasureName": MEASURE,
            "MeasureValue": str(value),
            "MeasureValueType": "BIGINT",
            "Time": time,
            "TimeUnit": "NANOSECONDS",
            "Version": RECORD_VERSION,
        }
        for (category, currency), value in sorted(values.items())
    ]


def _book_ids(events: Sequence[StreamEvent]) -> list[int]:
    return sorted({book for e in events for book, _, _ in line_changes(e) if book})


class TimestreamSink:
    """A records.Sink writing the cart events of each batch to CartEvents."""

    def __init__(
        self,
        timestream: Any,
        database: str,
        categories: BookCategories,
        table: str = CART_EVENTS_TABLE,
    ) -> None:
        self.timestream = timestream
        self.database = database
        self.table = table
        self.book_categories = categories

    async def write(self, events: Sequence[StreamEvent]) -> None:
        ids = _book_ids(events)
        categories = await self.book_categories.categories(ids) if ids else {}
        records = [r for e in events for r in cart_records(e, categories)]
        for start in range(0, len(records), MAX_RECORDS_PER_WRITE):
            await self._write(records[start : start + MAX_RECORDS_PER_WRITE])

    async def _write(self, records: list[dict[str, Any]]) -> None:
        try:
            await self.timestream.write_records(
                DatabaseName=self.database, TableName=self.table, Records=records
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "RejectedRecordsException":
                raise
            # Rejections are final (too old for the stores' retention, a record already
            # there with another value under the same version): retrying cannot succeed
            # and must not stop the log. The other records of the call were written.
            for rejected in exc.response.get("RejectedRecords", []):
                log.warning(
                    "timestream rejected a record: %s (index %s)",
                    rejected.get("Reason"),
                    rejected.get("RecordIndex"),
                )
