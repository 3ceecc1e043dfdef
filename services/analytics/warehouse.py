"""The warehouse sink: events from the analytics log into the `analytics` schema.

What each event type becomes:
- `interaction.recorded` (data: cloudshelf.analytics.v1.Interaction) -> a row of
  fact_book_interactions keyed by interaction_id;
- `order.recorded` (data: cloudshelf.analytics.v1.Order, from RecordOrder) and
  `order.placed` (data: cloudshelf.storefront.v1.OrderPlacedEvent) -> a row of fact_orders
  keyed by order_id; an order.placed's lines -> fact_order_lines (with the category's name
  as the category events described it; 'unknown' until its category event arrives);
- `order.cancelled` (data: OrderCancelledEvent, the whole order) -> order_status
  'cancelled' (the order is written from the event when its order.placed is not there yet);
- `book.created` / `book.updated` -> dim_books, kept only when the event's
  aggregate_version is newer than the row's; price_range from the price (PRICE_BANDS);
- `category.*` / `publisher.*` -> the names dim_books shows (and renames reach it).
Every other type (inventory.*, cart.*, review.*, author.*) has no warehouse row:
the cart's add_to_cart is recorded as an interaction by the storefront through
RecordInteractions, so cart.* events would count it twice.

Rows are written in bulk (one INSERT ... SELECT FROM unnest(...) per table) and
de-duplicated by their keys (ON CONFLICT DO NOTHING): a replayed event changes nothing. An
event whose data the warehouse cannot hold is returned as rejected, with the reason, and
the caller dead-letters it; the rest of the batch is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from cloudshelf.analytics.v1 import analytics_pb2
from cloudshelf.catalog.v1 import catalog_pb2
from services.analytics.records import StreamEvent

log = logging.getLogger("cloudshelf.analytics.warehouse")

# price_range of dim_books, by the book's price in minor units (whatever the currency):
# low below 10.00, medium from 10.00 to 24.99, high from 25.00.
PRICE_BANDS = ((1_000, "low"), (2_500, "medium"))
HIGH_PRICE = "high"
INT32_MAX = 2**31 - 1
# The transaction-level advisory lock of writes that resolve catalog names (any constant,
# the same for every replica).
DIMENSIONS_LOCK = 0x616E616C79  # "analy"
INT64_MAX = 2**63 - 1


class InvalidEvent(ValueError):
    """An envelope whose data the warehouse cannot hold (the reason goes to dead letters)."""


def price_range(minor_units: int) -> str:
    for upper, band in PRICE_BANDS:
        if minor_units < upper:
            return band
    return HIGH_PRICE


@dataclass
class Rows:
    """What one batch writes, table by table (tuples in the columns' order below)."""

    interactions: list[tuple[Any, ...]] = field(default_factory=list)
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    order_lines: list[tuple[Any, ...]] = field(default_factory=list)
    # order id -> the cancelled order's row (its status 'cancelled').
    cancellations: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # (kind, id) -> (kind, id, name, version): only the newest of the batch.
    names: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    # book id -> row: only the newest version of the batch.
    books: dict[int, tuple[Any, ...]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (
            self.interactions
            or self.orders
            or self.order_lines
            or self.cancellations
            or self.names
            or self.books
        )


@dataclass(frozen=True)
class Rejected:
    event: StreamEvent
    reason: str


# --- from events to rows (pure) ----------------------------------------------------------


def _parse(data: Mapping[str, Any], message: Message, what: str) -> Any:
    try:
        return json_format.ParseDict(dict(data), message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"data is not a {what}: {exc}") from exc


def _text(value: str, name: str, max_length: int) -> str | None:
    if "\x00" in value:
        raise InvalidEvent(f"{name} holds a NUL character")
    if len(value) > max_length:
        raise InvalidEvent(f"{name} is longer than {max_length} characters")
    return value or None


def _currency(code: str, name: str) -> str:
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise InvalidEvent(f"{name}.currency_code must be an ISO 4217 code, got {code!r}")
    return code.upper()


def _amount(minor_units: int, name: str) -> int:
    if not 0 <= minor_units <= INT64_MAX:
        raise InvalidEvent(f"{name} must not be negative")
    return minor_units


def _enum_word(name: str, prefix: str) -> str | None:
    """INTERACTION_TYPE_ADD_TO_CART -> add_to_cart; the UNSPECIFIED value -> None."""
    word = name.removeprefix(prefix).lower()
    return None if word == "unspecified" else word


def _event_time(event: StreamEvent) -> datetime:
    """When the event happened: the envelope's occurred_at, else its arrival in the log."""
    occurred = event.envelope.get("occurred_at")
    if isinstance(occurred, str) and occurred:
        return _timestamp(occurred, "occurred_at")
    return event.arrival


def _timestamp(text: Any, name: str) -> datetime:
    stamp = Timestamp()
    try:
        stamp.FromJsonString(str(text))
    except ValueError as exc:
        raise InvalidEvent(f"{name} is not an RFC 3339 time: {exc}") from exc
    return stamp.ToDatetime(tzinfo=UTC)


_INTERACTION_TYPES = {
    name: _enum_word(name, "INTERACTION_TYPE_") for name in analytics_pb2.InteractionType.keys()
}
_INTERACTION_TYPES.update(
    {
        str(number): _INTERACTION_TYPES[analytics_pb2.InteractionType.Name(number)]
        for number in analytics_pb2.InteractionType.values()
    }
)


def _field(data: Mapping[str, Any], name: str, json_name: str) -> Any:
    """A field by its proto name or its lowerCamelCase JSON name (proto JSON takes both)."""
    value = data.get(name)
    return data.get(json_name) if value is None else value


def _string(data: Mapping[str, Any], name: str, json_name: str, max_length: int) -> str | None:
    value = _field(data, name, json_name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} is not a string")
    return _text(value, name, max_length)


def _time(value: Any, name: str) -> datetime:
    """An RFC 3339 time (proto JSON's Timestamp), read fast when it fits datetime."""
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return _timestamp(value, name)  # e.g. nanoseconds, which datetime does not hold
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{name} has no time zone")
    return parsed


def _interaction(event: StreamEvent) -> tuple[Any, ...]:
    """The Interaction's proto JSON read by hand: json_format.ParseDict costs ~0.12 ms per
    event, most of the consumer's CPU at 5,000 events/s."""
    data = event.data
    type_name = _field(data, "type", "type")
    interaction_type = _INTERACTION_TYPES.get(str(type_name)) if type_name is not None else None
    if interaction_type is None:
        raise InvalidEvent(f"type is unspecified or unknown: {type_name!r}")
    book_id = _integer(_field(data, "book_id", "bookId"), "book_id")
    if not 1 <= book_id <= INT32_MAX:
        raise InvalidEvent(f"book_id {book_id} is not a book id")
    rating = _integer(_field(data, "rating", "rating"), "rating", high=INT32_MAX)
    if rating and not 1 <= rating <= 5:
        raise InvalidEvent(f"rating {rating} is not between 1 and 5")
    duration = _integer(
        _field(data, "page_view_duration_seconds", "pageViewDurationSeconds"),
        "page_view_duration_seconds",
        high=INT32_MAX,
    )
    value_minor = currency = None
    value = _field(data, "value", "value")
    if value is not None:
        money = _object(value, "value")
        value_minor = _integer(_field(money, "minor_units", "minorUnits"), "value.minor_units")
        currency = _currency(str(_field(money, "currency_code", "currencyCode") or ""), "value")
    when = _field(data, "time", "time")
    return (
        _string(data, "interaction_id", "interactionId", 64) or _text(event.id, "id", 64),
        book_id,
        _string(data, "user_id", "userId", 50),
        _string(data, "session_id", "sessionId", 50),
        interaction_type,
        _event_time(event) if when is None else _time(when, "time"),
        value_minor,
        currency,
        rating or None,
        duration or None,
        _string(data, "came_from", "cameFrom", 200),
        _string(data, "device_type", "deviceType", 50),
        _string(data, "user_location", "userLocation", 100),
    )


def _recorded_order(event: StreamEvent) -> tuple[Any, ...]:
    order = _parse(event.data, analytics_pb2.Order(), "cloudshelf.analytics.v1.Order")
    if not order.order_id:
        raise InvalidEvent("order_id is missing")
    currency = _currency(order.total_amount.currency_code, "total_amount")
    for name in ("discount_amount", "tax_amount", "shipping_cost"):
        money = getattr(order, name)
        if money.currency_code and money.currency_code.upper() != currency:
            raise InvalidEvent(f"{name} is in another currency than total_amount")
    if order.total_items < 0:
        raise InvalidEvent("total_items is negative")
    when = order.order_time.ToDatetime(tzinfo=UTC) if order.HasField("order_time") else None
    when = when or _event_time(event)
    status = _enum_word(analytics_pb2.OrderStatus.Name(order.order_status), "ORDER_STATUS_")
    return (
        _text(order.order_id, "order_id", 50),
        _text(order.user_id, "user_id", 50),
        _text(order.session_id, "session_id", 50),
        when,
        currency,
        _amount(order.total_amount.minor_units, "total_amount"),
        order.total_items,
        _enum_word(analytics_pb2.PaymentMethod.Name(order.payment_method), "PAYMENT_METHOD_"),
        _amount(order.discount_amount.minor_units, "discount_amount"),
        _amount(order.tax_amount.minor_units, "tax_amount"),
        _amount(order.shipping_cost.minor_units, "shipping_cost"),
        status or "placed",
        _text(order.device_type, "device_type", 50),
        _text(order.user_location, "user_location", 100),
        _text(order.referrer_source, "referrer_source", 100),
    )


def _integer(value: Any, name: str, low: int = 0, high: int = INT64_MAX) -> int:
    """An int64 of proto JSON (a string or a number)."""
    if isinstance(value, float) and not value.is_integer():
        raise InvalidEvent(f"{name} is not an integer")
    try:
        number = int(value or 0)
    except (TypeError, ValueError):
        raise InvalidEvent(f"{name} is not an integer") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise InvalidEvent(f"{name} is out of range")
    return number


def _object(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent(f"{name} is not an object")
    return value


def _money(value: Any, name: str, currency: str | None) -> int:
    money = _object(value, name)
    minor = _integer(money.get("minor_units"), f"{name}.minor_units")
    code = money.get("currency_code") or currency
    if minor and currency is not None and str(code).upper() != currency:
        raise InvalidEvent(f"{name} is in another currency than the order's total")
    return minor


def _storefront_order(
    event: StreamEvent, status: str
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """A cloudshelf.storefront.v1.Order (OrderPlacedEvent / OrderCancelledEvent's `order`)
    read as JSON: its fact_orders row and its lines."""
    order = _object(event.data.get("order"), "order")
    order_id = order.get("id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidEvent("order.id is missing")
    total = _object(order.get("total"), "order.total")
    currency = _currency(str(total.get("currency_code") or ""), "order.total")
    created = order.get("create_time")
    when = _timestamp(created, "order.create_time") if created else _event_time(event)
    payment = order.get("payment_method")
    row = (
        _text(order_id, "order.id", 50),
        _text(str(order.get("user_id") or ""), "order.user_id", 50),
        None,
        when,
        currency,
        _money(total, "order.total", currency),
        _integer(order.get("total_items"), "order.total_items", high=INT32_MAX),
        _enum_word(payment, "PAYMENT_METHOD_") if isinstance(payment, str) else None,
        _money(order.get("discount"), "order.discount", currency),
        _money(order.get("tax"), "order.tax", currency),
        _money(order.get("shipping"), "order.shipping", currency),
        status,
        None,
        None,
        None,
    )
    lines: list[tuple[Any, ...]] = []
    raw_lines = order.get("lines") or []
    if not isinstance(raw_lines, list):
        raise InvalidEvent("order.lines is not a list")
    for index, raw in enumerate(raw_lines):
        line = _object(raw, f"order.lines[{index}]")
        quantity = _integer(line.get("quantity"), f"order.lines[{index}].quantity", 1, INT32_MAX)
        lines.append(
            (
                order_id,
                _integer(line.get("book_id"), f"order.lines[{index}].book_id", 1),
                _integer(line.get("category_id"), f"order.lines[{index}].category_id") or None,
                quantity,
                _money(line.get("line_total"), f"order.lines[{index}].line_total", currency),
                currency,
            )
        )
    return row, lines


def _book(event: StreamEvent) -> tuple[Any, ...]:
    data = event.data
    raw = data.get("book") if event.type == "book.created" else data.get("after")
    book = _parse(_object(raw, "book"), catalog_pb2.Book(), "cloudshelf.catalog.v1.Book")
    if not 1 <= book.id <= INT32_MAX:
        raise InvalidEvent(f"book id {book.id} is not a book id")
    version = _integer(event.envelope.get("aggregate_version"), "aggregate_version")
    authors = sorted(book.authors, key=lambda a: a.order_index)
    return (
        book.id,
        book.title[:500] or None,
        book.category_id or None,
        ", ".join(a.display_name for a in authors if a.display_name) or None,
        book.publisher_id or None,
        price_range(book.price.minor_units) if book.HasField("price") else None,
        book.publication_date.year or None,
        _enum_word(catalog_pb2.BookFormat.Name(book.format), "BOOK_FORMAT_"),
        book.language_code[:10] or None,
        _event_time(event),
        version,
    )


def _name(event: StreamEvent, kind: str) -> tuple[Any, ...]:
    entity = _object(event.data.get(kind), kind)
    entity_id = _integer(entity.get("id"), f"{kind}.id", 1)
    name = entity.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidEvent(f"{kind}.name is missing")
    version = _integer(event.envelope.get("aggregate_version"), "aggregate_version")
    return (kind, entity_id, name, version)


def _newer(rows: dict[Any, tuple[Any, ...]], key: Any, row: tuple[Any, ...]) -> None:
    """Keeps the row with the highest aggregate_version (its last column) per key."""
    kept = rows.get(key)
    if kept is None or kept[-1] < row[-1]:
        rows[key] = row


def _add(rows: Rows, event: StreamEvent) -> None:
    kind = event.type
    if kind == "interaction.recorded":
        rows.interactions.append(_interaction(event))
    elif kind == "order.recorded":
        rows.orders.append(_recorded_order(event))
    elif kind == "order.placed":
        order, lines = _storefront_order(event, "placed")
        rows.orders.append(order)
        rows.order_lines.extend(lines)
    elif kind == "order.cancelled":
        order, lines = _storefront_order(event, "cancelled")
        rows.cancellations[order[0]] = order
        rows.order_lines.extend(lines)
    elif kind in ("book.created", "book.updated"):
        book = _book(event)
        _newer(rows.books, book[0], book)
    elif kind in ("category.created", "category.updated"):
        name = _name(event, "category")
        _newer(rows.names, name[:2], name)
    elif kind in ("publisher.created", "publisher.updated"):
        name = _name(event, "publisher")
        _newer(rows.names, name[:2], name)


def rows_of(events: Iterable[StreamEvent]) -> tuple[Rows, list[Rejected]]:
    """The rows a batch writes, and the events refused as invalid data."""
    rows = Rows()
    rejected: list[Rejected] = []
    for event in events:
        try:
            _add(rows, event)
        except InvalidEvent as exc:
            rejected.append(Rejected(event, str(exc)))
    return rows, rejected


# --- writing -------------------------------------------------------------------------------


def _columns(rows: Sequence[tuple[Any, ...]], count: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(count)]


_ORDER_COLUMNS = (
    "order_id, user_id, session_id, order_timestamp, currency, total_amount_minor, "
    "total_items, payment_method, discount_amount_minor, tax_amount_minor, "
    "shipping_cost_minor, order_status, device_type, user_location, referrer_source"
)
_ORDER_UNNEST = (
    "unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::int8[], "
    "$7::int4[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[], $13::text[], "
    "$14::text[], $15::text[])"
)
_ORDER_SELECT = (
    "SELECT o, u, s, (t AT TIME ZONE 'UTC')::date, t, c, a, i, p, d, x, sh, st, dv, l, r "
    f"FROM {_ORDER_UNNEST} AS v(o, u, s, t, c, a, i, p, d, x, sh, st, dv, l, r)"
)
_ORDER_INSERT = (
    f"INSERT INTO analytics.fact_orders (order_id, user_id, session_id, order_date, "
    f"order_timestamp, currency, total_amount_minor, total_items, payment_method, "
    f"discount_amount_minor, tax_amount_minor, shipping_cost_minor, order_status, "
    f"device_type, user_location, referrer_source) {_ORDER_SELECT}"
)


async def _write_rows(conn: asyncpg.Connection, rows: Rows) -> None:
    # Names first: books and order lines of the same batch resolve them.
    if rows.names:
        names = list(rows.names.values())
        await conn.execute(
            "INSERT INTO analytics.dim_catalog_names (kind, id, name, aggregate_version) "
            "SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[]) "
            "ON CONFLICT (kind, id) DO UPDATE SET name = EXCLUDED.name, "
            "aggregate_version = EXCLUDED.aggregate_version "
            "WHERE dim_catalog_names.aggregate_version < EXCLUDED.aggregate_version",
            *_columns(names, 4),
        )
        # A rename reaches the books already described.
        await conn.execute(
            "UPDATE analytics.dim_books b SET "
            "category_name = CASE WHEN n.kind = 'category' THEN left(n.name, 100) "
            "ELSE b.category_name END, "
            "publisher_name = CASE WHEN n.kind = 'publisher' THEN left(n.name, 200) "
            "ELSE b.publisher_name END "
            "FROM analytics.dim_catalog_names n, unnest($1::text[], $2::int8[]) AS k(kind, id) "
            "WHERE n.kind = k.kind AND n.id = k.id AND ("
            "(n.kind = 'category' AND b.category_id = n.id) OR "
            "(n.kind = 'publisher' AND b.publisher_id = n.id))",
            *_columns(names, 2),
        )
        # Lines written before their category's event get its name once it comes.
        await conn.execute(
            "UPDATE analytics.fact_order_lines l SET category_name = left(n.name, 100) "
            "FROM analytics.dim_catalog_names n, unnest($1::text[], $2::int8[]) AS k(kind, id) "
            "WHERE n.kind = 'category' AND k.kind = 'category' AND n.id = k.id "
            "AND l.category_id = n.id AND l.category_name = 'unknown'",
            *_columns(names, 2),
        )
    if rows.books:
        await conn.execute(
            "INSERT INTO analytics.dim_books (book_id, title, category_id, category_name, "
            "author_names, publisher_id, publisher_name, price_range, publication_year, "
            "format, language_code, last_updated, aggregate_version) "
            "SELECT v.id, v.title, v.category_id, left(c.name, 100), v.authors, "
            "v.publisher_id, left(p.name, 200), v.price_range, v.year, v.format, "
            "v.language, v.updated, v.version "
            "FROM unnest($1::int4[], $2::text[], $3::int8[], $4::text[], $5::int8[], "
            "$6::text[], $7::int4[], $8::text[], $9::text[], $10::timestamptz[], $11::int8[]) "
            "AS v(id, title, category_id, authors, publisher_id, price_range, year, format, "
            "language, updated, version) "
            "LEFT JOIN analytics.dim_catalog_names c ON c.kind = 'category' "
            "AND c.id = v.category_id "
            "LEFT JOIN analytics.dim_catalog_names p ON p.kind = 'publisher' "
            "AND p.id = v.publisher_id "
            "ON CONFLICT (book_id) DO UPDATE SET title = EXCLUDED.title, "
            "category_id = EXCLUDED.category_id, category_name = EXCLUDED.category_name, "
            "author_names = EXCLUDED.author_names, publisher_id = EXCLUDED.publisher_id, "
            "publisher_name = EXCLUDED.publisher_name, price_range = EXCLUDED.price_range, "
            "publication_year = EXCLUDED.publication_year, format = EXCLUDED.format, "
            "language_code = EXCLUDED.language_code, last_updated = EXCLUDED.last_updated, "
            "aggregate_version = EXCLUDED.aggregate_version "
            "WHERE dim_books.aggregate_version < EXCLUDED.aggregate_version",
            *_columns(list(rows.books.values()), 11),
        )
    if rows.interactions:
        await conn.execute(
            "INSERT INTO analytics.fact_book_interactions (interaction_id, book_id, user_id, "
            "session_id, interaction_type, interaction_timestamp, value_minor, currency, "
            "rating, page_view_duration, came_from, device_type, user_location) "
            "SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], "
            "$6::timestamptz[], $7::int8[], $8::text[], $9::int2[], $10::int4[], $11::text[], "
            "$12::text[], $13::text[]) ON CONFLICT (interaction_id) DO NOTHING",
            *_columns(rows.interactions, 13),
        )
    if rows.orders:
        await conn.execute(
            f"{_ORDER_INSERT} ON CONFLICT (order_id) DO NOTHING", *_columns(rows.orders, 15)
        )
    if rows.cancellations:
        await conn.execute(
            f"{_ORDER_INSERT} ON CONFLICT (order_id) DO UPDATE SET order_status = 'cancelled'",
            *_columns(list(rows.cancellations.values()), 15),
        )
    if rows.order_lines:
        await conn.execute(
            "INSERT INTO analytics.fact_order_lines (order_id, book_id, category_id, "
            "category_name, quantity, revenue_minor, currency) "
            "SELECT v.o, v.b, v.c, coalesce(left(n.name, 100), 'unknown'), v.q, v.r, v.cur "
            "FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::int8[], "
            "$6::text[]) AS v(o, b, c, q, r, cur) "
            "LEFT JOIN analytics.dim_catalog_names n ON n.kind = 'category' AND n.id = v.c "
            "ON CONFLICT (order_id, book_id) DO NOTHING",
            *_columns(rows.order_lines, 6),
        )


# What PostgreSQL refuses as the data's fault (a value out of range, a check): the event is
# dead-lettered. Anything else (connection lost, timeout) fails the batch, to be retried.
_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class WarehouseSink:
    """Writes a batch inside the caller's transaction (the one that moves the checkpoint),
    as its first statement (see the lock in `write`)."""

    async def write(
        self, conn: asyncpg.Connection, events: Sequence[StreamEvent]
    ) -> list[Rejected]:
        rows, rejected = rows_of(events)
        if rows.empty():
            return rejected
        if rows.names or rows.books or rows.order_lines:
            # Names are resolved across rows that batches of other shards write at the same
            # time: a book and its category's event in two concurrent transactions would
            # each miss the other's uncommitted row. Batches that touch them take turns;
            # first in the transaction, before any row lock, so no deadlock can form.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DIMENSIONS_LOCK)
        try:
            async with conn.transaction():  # a savepoint: a refused row undoes only this
                await _write_rows(conn, rows)
            return rejected
        except _DATA_ERRORS as exc:
            log.warning("warehouse refused a batch, writing its events one by one: %s", exc)
        refused = {id(r.event) for r in rejected}
        for event in events:
            if id(event) in refused:
                continue
            await self._write_one(conn, event, rejected)
        return rejected

    async def _write_one(
        self, conn: asyncpg.Connection, event: StreamEvent, rejected: list[Rejected]
    ) -> None:
        single, _ = rows_of([event])
        try:
            async with conn.transaction():
                await _write_rows(conn, single)
        except _DATA_ERRORS as exc:
            rejected.append(Rejected(event, f"refused by the warehouse: {exc}"))
