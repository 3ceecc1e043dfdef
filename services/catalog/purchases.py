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
queue's visibility timeout. A message that is not an order event at all is logged and
deleted: it could never be applied.

A review's flag changes without a `review.updated` event (its version still advances:
consumers see a gap, which the conventions allow); AddReview sets the flag from the same
table when the review is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from typing import Any

import asyncpg
from google.protobuf import json_format
from opentelemetry.instrumentation.utils import suppress_instrumentation

from cloudshelf.storefront.v1 import storefront_pb2

log = logging.getLogger(__name__)

ORDER_EVENTS_QUEUE_ENV = "CLOUDSHELF_CATALOG_ORDER_EVENTS_QUEUE"
DEFAULT_ORDER_EVENTS_QUEUE = "cloudshelf-catalog-order-events"
ORDER_EVENTS_RULE = "cloudshelf-catalog-order-events"
ORDER_EVENTS_SOURCE = "cloudshelf.storefront"
ORDER_EVENT_TYPES = ("order.placed", "order.cancelled")
# Seconds a receive waits for messages (SQS long polling).
RECEIVE_WAIT_SECONDS = 1
MAX_BACKOFF_SECONDS = 30.0


def order_events_queue() -> str:
    return os.environ.get(ORDER_EVENTS_QUEUE_ENV, "") or DEFAULT_ORDER_EVENTS_QUEUE


async def ensure_order_events_route(events: Any, sqs: Any, bus: str, queue: str) -> list[str]:
    """Creates (or keeps) the queue and the bus rule that routes order events into it;
    safe to repeat."""
    url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    queue_arn = attributes["Attributes"]["QueueArn"]
    rule_arn = (
        await events.put_rule(
            Name=ORDER_EVENTS_RULE,
            EventBusName=bus,
            EventPattern=json.dumps(
                {"source": [ORDER_EVENTS_SOURCE], "detail-type": list(ORDER_EVENT_TYPES)}
            ),
            State="ENABLED",
        )
    )["RuleArn"]
    await events.put_targets(
        Rule=ORDER_EVENTS_RULE,
        EventBusName=bus,
        Targets=[{"Id": "catalog-order-events", "Arn": queue_arn}],
    )
    # In AWS the bus may send to the queue only when the queue's policy allows this rule.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }
    await sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return [f"order events: rule {ORDER_EVENTS_RULE} -> queue {queue}"]


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
    """Polls the catalog's order-events queue and applies each event (a background task
    of the catalog process)."""

    def __init__(self, pool: asyncpg.Pool, sqs: Any, queue: str) -> None:
        self.pool = pool
        self.sqs = sqs
        self.queue = queue
        self._url: str | None = None

    async def poll_once(self) -> int:
        """One receive; returns how many messages were handled."""
        with suppress_instrumentation():  # no root span per idle poll
            if self._url is None:
                self._url = (await self.sqs.get_queue_url(QueueName=self.queue))["QueueUrl"]
            answer = await self.sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
            )
        messages = answer.get("Messages", [])
        for message in messages:
            await self._handle(message)
        return len(messages)

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            event_type, version, order = parse_order_event(message["Body"])
        except NotAnOrderEvent as exc:
            log.error("order events: dropped a message that is not an order event: %s", exc)
        else:
            async with self.pool.acquire() as conn, conn.transaction():
                changed = await apply_order_event(conn, event_type, version, order)
            log.info(
                "order events: %s %s applied, %d reviews changed", event_type, order.id, changed
            )
        await self.sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.poll_once()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The queue or the database is down: the events wait in the queue.
                log.warning("order events: %s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
