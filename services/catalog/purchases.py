"""Verified purchases (issue 18 item 4): the catalog learns orders from the storefront's
events, through the event bus, and marks a review `is_verified_purchase` while its author
holds an order of its book that is not cancelled.

The route: an EventBridge rule on the bus (source `cloudshelf.storefront`, detail-types
`order.placed` and `order.cancelled`) targets an SQS queue of the catalog's
(`CLOUDSHELF_CATALOG_ORDER_EVENTS_QUEUE`), created by provisioning; `OrderEventsConsumer`
polls it in the catalog process. Delivery is at least once and in no guaranteed order:
each book of an order is one row of `book_catalog.order_purchases` that keeps the order's
highest `aggregate_version` applied (placed = 1, cancelled = 2), so a duplicate or a late
`order.placed` after its `order.cancelled` changes nothing. A message is deleted after its
event is applied (committed); one that fails stays in the queue and comes back after the
queue's visibility timeout. A message that is not an order event at all could never be
applied: it is left to the queue's dead-letter redrive (`<queue>-dlq`).

A review's flag changes without a `review.updated` event (its version still advances:
consumers see a gap, which the conventions allow); AddReview sets the flag from the same
table when the review is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from typing import Any

import asyncpg
from botocore.exceptions import ClientError
from google.protobuf import json_format

from cloudshelf.runtime.aws_resources import ensure_queue, ensure_rule_to_queue
from cloudshelf.runtime.queues import ConsumerPolicy, MalformedMessage, QueueConsumer, QueueMessage
from cloudshelf.storefront.v1 import storefront_pb2

log = logging.getLogger(__name__)

ORDER_EVENTS_QUEUE_ENV = "CLOUDSHELF_CATALOG_ORDER_EVENTS_QUEUE"
DEFAULT_ORDER_EVENTS_QUEUE = "cloudshelf-catalog-order-events"
ORDER_EVENTS_RULE = "cloudshelf-catalog-order-events"
ORDER_EVENTS_SOURCE = "cloudshelf.storefront"
ORDER_EVENT_TYPES = ("order.placed", "order.cancelled")
# Seconds a receive waits for messages (SQS long polling).
RECEIVE_WAIT_SECONDS = 1
# The rule's target id before the route moved onto the runtime's ensure_rule_to_queue.
_OLD_TARGET = "catalog-order-events"


def order_events_queue() -> str:
    return os.environ.get(ORDER_EVENTS_QUEUE_ENV, "") or DEFAULT_ORDER_EVENTS_QUEUE


async def ensure_order_events_route(events: Any, sqs: Any, bus: str, queue: str) -> list[str]:
    """Creates (or keeps) the queue, its dead-letter queue and the bus rule that routes
    order events into it; safe to repeat."""
    made, dead_letters = await ensure_queue(sqs, queue)
    await ensure_rule_to_queue(
        events,
        sqs,
        bus=bus,
        rule=ORDER_EVENTS_RULE,
        pattern={"source": [ORDER_EVENTS_SOURCE], "detail-type": list(ORDER_EVENT_TYPES)},
        queue=made,
    )
    # Releases before the runtime's route named the rule's target otherwise: one target.
    with contextlib.suppress(ClientError):
        await events.remove_targets(Rule=ORDER_EVENTS_RULE, EventBusName=bus, Ids=[_OLD_TARGET])
    return [
        f"order events: rule {ORDER_EVENTS_RULE} -> queue {queue} "
        f"(dead letters: {dead_letters.url.rsplit('/', 1)[-1]})"
    ]


class NotAnOrderEvent(ValueError):
    pass


def parse_order_event(body: str) -> tuple[str, int, storefront_pb2.Order]:
    """(type, aggregate_version, order) of an SQS message body holding an EventBridge event
    whose detail is an order event's envelope."""
    try:
        event = json.loads(body)
        envelope = event["detail"]
        event_type = envelope["type"]
        version = int(envelope["aggregate_version"])
        message: storefront_pb2.OrderPlacedEvent | storefront_pb2.OrderCancelledEvent
        if event_type == "order.placed":
            message = storefront_pb2.OrderPlacedEvent()
        elif event_type == "order.cancelled":
            message = storefront_pb2.OrderCancelledEvent()
        else:
            raise NotAnOrderEvent(f"event type {event_type!r}")
        json_format.ParseDict(envelope["data"], message, ignore_unknown_fields=True)
        uuid.UUID(message.order.id)
    except NotAnOrderEvent:
        raise
    except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
        raise NotAnOrderEvent(str(exc)[:200]) from exc
    if not message.order.user_id or not message.order.lines:
        raise NotAnOrderEvent(f"order {message.order.id} without a user or lines")
    return event_type, version, message.order


async def apply_order_event(
    conn: asyncpg.Connection, event_type: str, version: int, order: storefront_pb2.Order
) -> int:
    """Records the order's books and updates its author's reviews of them; returns how many
    reviews changed. Call inside a transaction."""
    book_ids = sorted({line.book_id for line in order.lines})
    await conn.execute(
        "INSERT INTO book_catalog.order_purchases AS p "
        "(order_id, book_id, user_id, cancelled, order_version) "
        "SELECT $1, b, $3, $4, $5 FROM unnest($2::bigint[]) AS b "
        "ON CONFLICT (order_id, book_id) DO UPDATE "
        "SET cancelled = EXCLUDED.cancelled, order_version = EXCLUDED.order_version "
        "WHERE p.order_version < EXCLUDED.order_version",
        uuid.UUID(order.id),
        book_ids,
        order.user_id,
        event_type == "order.cancelled",
        version,
    )
    status = await conn.execute(
        "UPDATE book_catalog.reviews r SET is_verified_purchase = v.verified "
        "FROM (SELECT b AS book_id, EXISTS ("
        "        SELECT 1 FROM book_catalog.order_purchases p "
        "        WHERE p.user_id = $1 AND p.book_id = b AND NOT p.cancelled) AS verified "
        "      FROM unnest($2::bigint[]) AS b) v "
        "WHERE r.user_id = $1 AND r.book_id = v.book_id "
        "AND r.is_verified_purchase <> v.verified",
        order.user_id,
        book_ids,
    )
    return int(status.split()[-1])


class OrderEventsConsumer:
    """Consumes the catalog's order-events queue and applies each event (a background task
    of the catalog process), on the runtime's QueueConsumer."""

    def __init__(self, pool: asyncpg.Pool, sqs: Any, queue: str) -> None:
        self.pool = pool
        self.consumer = QueueConsumer(
            sqs,
            queue,
            "order events",
            handle_each=self.handle,
            policy=ConsumerPolicy(wait_seconds=RECEIVE_WAIT_SECONDS),
        )

    async def run(self) -> None:
        await self.consumer.run()

    async def handle(self, message: QueueMessage) -> None:
        try:
            event_type, version, order = parse_order_event(message.body)
        except NotAnOrderEvent as exc:  # it could never be applied: to the dead letters
            raise MalformedMessage(f"not an order event: {exc}") from None
        async with self.pool.acquire() as conn, conn.transaction():
            changed = await apply_order_event(conn, event_type, version, order)
        log.info("order events: %s %s applied, %d reviews changed", event_type, order.id, changed)
