"""Reading the cart's price-change messages (services/cart/notifications.py): what the rule
delivers becomes a PriceChange, other catalog updates nothing, anything else is malformed
(and says so without repeating the message's content)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.events import Event, event_data
from cloudshelf.runtime.queues import MalformedMessage
from services.cart.notifications import read_price_change

SECRET = "alice@example.com"


def _detail(
    price_changed: bool = True, occurred_at: datetime | None = None, **overrides: Any
) -> dict[str, Any]:
    data = catalog_pb2.BookUpdatedEvent(
        book_id=42,
        changed_fields=["price"] if price_changed else ["title"],
        price_changed=price_changed,
        before=catalog_pb2.Book(
            id=42, title="Old", price=common_pb2.Money(minor_units=1999, currency_code="USD")
        ),
        after=catalog_pb2.Book(
            id=42, title="New", price=common_pb2.Money(minor_units=1499, currency_code="USD")
        ),
    )
    event = Event(
        id=str(uuid.uuid4()),
        type="book.updated",
        subject="42",
        aggregate_version=7,
        data_type=data.DESCRIPTOR.full_name,
        data=event_data(data),
        traceparent=f"00-{'a' * 32}-{'b' * 16}-01",
        occurred_at=occurred_at or datetime(2026, 11, 26, 4, 0, 0, 123456, tzinfo=UTC),
    )
    return {**event.envelope("cloudshelf.catalog"), **overrides}


def _body(detail: Any) -> str:
    # As EventBridge writes it to an SQS target.
    return json.dumps({"version": "0", "detail-type": "book.updated", "detail": detail})


def test_a_price_change_is_read_with_both_prices() -> None:
    detail = _detail()
    change = read_price_change(_body(detail))
    assert change is not None
    assert change.event_id == detail["id"] and change.book_id == 42 and change.title == "New"
    assert (change.old_price.minor_units, change.new_price.minor_units) == (1999, 1499)
    assert change.new_price.currency_code == "USD"
    assert change.traceparent == detail["traceparent"]
    assert change.notification_id == f"2026-11-26T04:00:00.123456Z#{detail['id']}"


def test_notification_ids_sort_by_the_time_of_the_change() -> None:
    times = [
        datetime(2026, 11, 26, 4, 0, 0, tzinfo=UTC),  # no fraction in the JSON
        datetime(2026, 11, 26, 4, 0, 0, 5, tzinfo=UTC),
        datetime(2026, 11, 26, 4, 0, 1, 100000, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    ]
    ids = []
    for moment in times:
        change = read_price_change(_body(_detail(occurred_at=moment)))
        assert change is not None
        ids.append(change.notification_id)
    assert sorted(ids) == ids


def test_the_same_event_always_gets_the_same_notification_id() -> None:
    body = _body(_detail())
    first, again = read_price_change(body), read_price_change(body)
    assert first is not None and again is not None
    assert first.notification_id == again.notification_id


def test_other_updates_and_other_events_are_nothing_to_notify() -> None:
    assert read_price_change(_body(_detail(price_changed=False))) is None
    assert read_price_change(_body(_detail(type="inventory.adjusted"))) is None


@pytest.mark.parametrize(
    "body",
    [
        f"not json {SECRET}",
        json.dumps([SECRET]),
        json.dumps({"detail": SECRET}),
        _body(_detail(data_type=f"cloudshelf.catalog.v1.{SECRET}")),
        _body(_detail(id="")),
        _body(_detail(id=f"{SECRET}\x00")),
        _body(_detail(id="x" * 65)),
        _body({k: v for k, v in _detail().items() if k != "occurred_at"}),
        _body({**_detail(), "occurred_at": SECRET}),
        _body(_detail(data=SECRET)),
        _body(_detail(data={"book_id": SECRET, "price_changed": True})),
        _body(_detail(data={"book_id": "0", "price_changed": True})),
        _body(_detail(aggregate_version={"nested": SECRET})),
    ],
)
def test_malformed_messages_are_refused_without_their_content(body: str) -> None:
    with pytest.raises(MalformedMessage) as refused:
        read_price_change(body)
    assert SECRET not in str(refused.value)
