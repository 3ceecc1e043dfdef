"""The catalog's reading of the storefront's order events (verified purchases)."""

from __future__ import annotations

import json
import uuid

import pytest

from cloudshelf.runtime.events import new_event
from cloudshelf.storefront.v1 import storefront_pb2
from services.catalog.purchases import NotAnOrderEvent, parse_order_event


def _body(event_type: str, data: storefront_pb2.OrderPlacedEvent, version: int = 1) -> str:
    event = new_event(event_type, data.order.id, version, data)
    # What the EventBridge rule puts in the queue: the bus's event, the envelope as detail.
    return json.dumps(
        {
            "detail-type": event_type,
            "source": "cloudshelf.storefront",
            "detail": event.envelope("cloudshelf.storefront"),
        }
    )


def _order() -> storefront_pb2.Order:
    order = storefront_pb2.Order(id=str(uuid.uuid4()), user_id="user-1")
    order.lines.add(book_id=7, quantity=2)
    return order


def test_an_order_placed_event_is_read_back_into_its_message() -> None:
    order = _order()
    event_type, version, parsed = parse_order_event(
        _body("order.placed", storefront_pb2.OrderPlacedEvent(order=order))
    )
    assert (event_type, version) == ("order.placed", 1)
    assert parsed == order


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"detail": {"type": "book.created", "aggregate_version": "1", "data": {}}}),
        json.dumps({"detail": {"type": "order.placed", "aggregate_version": "1", "data": {}}}),
        json.dumps(
            {"detail": {"type": "order.placed", "aggregate_version": "x", "data": {"order": {}}}}
        ),
    ],
)
def test_anything_else_is_not_an_order_event(body: str) -> None:
    with pytest.raises(NotAnOrderEvent):
        parse_order_event(body)


def test_an_order_without_lines_is_refused() -> None:
    order = storefront_pb2.Order(id=str(uuid.uuid4()), user_id="user-1")
    with pytest.raises(NotAnOrderEvent):
        parse_order_event(_body("order.cancelled", storefront_pb2.OrderPlacedEvent(order=order), 2))
