"""What RecordInteractions and RecordOrder accept, and the envelopes they put into the
analytics stream (services/analytics/records.py is the format).

Validation is all or nothing and names every refused field ("interactions[3].book_id"):
a batch is either wholly put into the stream or not at all.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import propagate

from cloudshelf.analytics.v1 import analytics_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.currencies import CURRENCY_CODES
from cloudshelf.runtime.errors import InvalidArguments
from cloudshelf.runtime.events import Event, event_data
from cloudshelf.runtime.validation import control_character_problem
from services.analytics.records import partition_key

EVENT_SOURCE = "cloudshelf.analytics"
INTERACTION_RECORDED = "interaction.recorded"
ORDER_RECORDED = "order.recorded"
MAX_INTERACTIONS = 500
# Envelope ids of recorded orders: uuid5 of the order id in this namespace, so a retried
# or redelivered RecordOrder gives the same id and the warehouse keeps one fact.
ORDER_EVENT_NAMESPACE = uuid.UUID("5f0b8a52-63a4-4d55-9d0e-6f3c2b1a8e71")

_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Timestamps the warehouse holds (protobuf's own range), as report_handlers checks them.
_MIN_SECONDS = -62135596800
_MAX_SECONDS = 253402300799

# The warehouse's column widths (migrations/202501001_warehouse_schema.up.sql).
_ID_LENGTH = 50
_INTERACTION_TEXT = {"came_from": 200, "device_type": 50, "user_location": 100}
_ORDER_TEXT = {"device_type": 50, "user_location": 100, "referrer_source": 100}

Violation = tuple[str, str]


def _text(field: str, value: str, max_length: int) -> Iterator[Violation]:
    if len(value) > max_length:
        yield field, f"must be at most {max_length} characters"
    else:
        problem = control_character_problem(value)
        if problem is not None:
            yield field, problem


def _instant(field: str, message: Timestamp, present: bool) -> Iterator[Violation]:
    if not present:
        yield field, "is required"
    elif not _MIN_SECONDS <= message.seconds <= _MAX_SECONDS or not 0 <= message.nanos < 10**9:
        yield field, "is out of range"


def _money(field: str, money: common_pb2.Money, currency: str | None) -> Iterator[Violation]:
    if money.currency_code not in CURRENCY_CODES:
        yield f"{field}.currency_code", "must be the ISO 4217 code of a circulating currency"
    elif currency is not None and money.currency_code != currency:
        yield f"{field}.currency_code", "must be the order's currency (total_amount's)"
    if money.minor_units < 0:
        yield f"{field}.minor_units", "must not be negative"


def _visitor(prefix: str, user_id: str, session_id: str) -> Iterator[Violation]:
    yield from _text(f"{prefix}.user_id", user_id, _ID_LENGTH)
    yield from _text(f"{prefix}.session_id", session_id, _ID_LENGTH)


def interaction_violations(index: int, one: analytics_pb2.Interaction) -> Iterator[Violation]:
    prefix = f"interactions[{index}]"
    if not _UUID_TEXT.fullmatch(one.interaction_id):
        yield f"{prefix}.interaction_id", "must be a UUID (e.g. a random UUID4), 36 characters"
    if one.book_id <= 0:
        yield f"{prefix}.book_id", "must be a book id (positive)"
    yield from _visitor(prefix, one.user_id, one.session_id)
    if not one.user_id and not one.session_id:
        yield f"{prefix}.session_id", "is required when there is no user_id"
    if one.type not in analytics_pb2.InteractionType.values() or not one.type:
        yield f"{prefix}.type", "must be one of view, add to cart, purchase, review"
    yield from _instant(f"{prefix}.time", one.time, one.HasField("time"))
    if one.HasField("value"):
        yield from _money(f"{prefix}.value", one.value, None)
    if one.type == analytics_pb2.INTERACTION_TYPE_REVIEW:
        if not 1 <= one.rating <= 5:
            yield f"{prefix}.rating", "must be between 1 and 5 for a review"
    elif one.rating:
        yield f"{prefix}.rating", "is only for reviews"
    if one.page_view_duration_seconds < 0:
        yield f"{prefix}.page_view_duration_seconds", "must not be negative"
    for name, length in _INTERACTION_TEXT.items():
        yield from _text(f"{prefix}.{name}", getattr(one, name), length)


def check_interactions(request: analytics_pb2.RecordInteractionsRequest) -> None:
    """INVALID_ARGUMENT with a violation per refused field of every interaction."""
    count = len(request.interactions)
    if not 1 <= count <= MAX_INTERACTIONS:
        raise InvalidArguments(
            [("interactions", f"must hold 1 to {MAX_INTERACTIONS} interactions, not {count}")]
        )
    violations = [
        violation
        for index, one in enumerate(request.interactions)
        for violation in interaction_violations(index, one)
    ]
    if violations:
        raise InvalidArguments(violations)


def check_order(order: analytics_pb2.Order, present: bool) -> None:
    """INVALID_ARGUMENT with a violation per refused field of the order."""
    if not present:
        raise InvalidArguments([("order", "is required")])
    violations: list[Violation] = []
    if not order.order_id:
        violations.append(("order.order_id", "is required"))
    violations += _text("order.order_id", order.order_id, _ID_LENGTH)
    violations += _visitor("order", order.user_id, order.session_id)
    violations += _instant("order.order_time", order.order_time, order.HasField("order_time"))
    currency: str | None = None
    if not order.HasField("total_amount"):
        violations.append(("order.total_amount", "is required"))
    else:
        violations += _money("order.total_amount", order.total_amount, None)
        currency = order.total_amount.currency_code
    for name, money, present in (
        ("discount_amount", order.discount_amount, order.HasField("discount_amount")),
        ("tax_amount", order.tax_amount, order.HasField("tax_amount")),
        ("shipping_cost", order.shipping_cost, order.HasField("shipping_cost")),
    ):
        if present:
            violations += _money(f"order.{name}", money, currency)
    if order.total_items < 1:
        violations.append(("order.total_items", "must be at least 1"))
    if order.payment_method not in analytics_pb2.PaymentMethod.values():
        violations.append(("order.payment_method", "is not a known payment method"))
    if order.order_status not in analytics_pb2.OrderStatus.values() or not order.order_status:
        violations.append(("order.order_status", "is required (a known order status)"))
    for name, length in _ORDER_TEXT.items():
        violations += _text(f"order.{name}", getattr(order, name), length)
    if violations:
        raise InvalidArguments(violations)


def _trace_context() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the current span's traceparent (and tracestate), if any
    return carrier


def interaction_envelope(
    one: analytics_pb2.Interaction, trace: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """The `interaction.recorded` envelope of an interaction, and its partition key."""
    subject = str(one.book_id)
    event = Event(
        id=str(uuid.UUID(one.interaction_id)),
        type=INTERACTION_RECORDED,
        subject=subject,
        aggregate_version=0,
        data_type=one.DESCRIPTOR.full_name,
        data=event_data(one),
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
        occurred_at=one.time.ToDatetime(tzinfo=UTC),
    )
    return event.envelope(EVENT_SOURCE), partition_key(one.user_id, one.session_id, subject)


def interaction_envelopes(
    request: analytics_pb2.RecordInteractionsRequest,
) -> tuple[list[dict[str, Any]], list[str]]:
    trace = _trace_context()
    pairs = [interaction_envelope(one, trace) for one in request.interactions]
    return [envelope for envelope, _ in pairs], [key for _, key in pairs]


def order_event_id(order_id: str) -> str:
    return str(uuid.uuid5(ORDER_EVENT_NAMESPACE, order_id))


def order_envelope(order: analytics_pb2.Order) -> tuple[dict[str, Any], str]:
    """The `order.recorded` envelope of an order, and its partition key."""
    trace = _trace_context()
    occurred_at: datetime = order.order_time.ToDatetime(tzinfo=UTC)
    event = Event(
        id=order_event_id(order.order_id),
        type=ORDER_RECORDED,
        subject=order.order_id,
        aggregate_version=0,
        data_type=order.DESCRIPTOR.full_name,
        data=event_data(order),
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
        occurred_at=occurred_at,
    )
    key = partition_key(order.user_id, order.session_id, order.order_id)
    return event.envelope(EVENT_SOURCE), key


def order_content_hash(order: analytics_pb2.Order) -> bytes:
    """SHA-256 of the order in a canonical form: equal hashes, the same order."""
    canonical = analytics_pb2.Order()
    canonical.CopyFrom(order)
    canonical.DiscardUnknownFields()
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).digest()
