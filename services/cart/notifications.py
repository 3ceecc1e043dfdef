"""Price-change notifications: the catalog's `book.updated` events with `price_changed`,
turned into one in-app notification per owner whose cart holds the book.

The events come from an SQS queue that an EventBridge rule on the bus fills
(`PRICE_CHANGES_PATTERN`; provisioned by services/cart/provision.py). The owners holding a
book are read from the BookHolders index (pk bookId, sk owner), which the stream processor
keeps from the cart table's stream.

Delivery is at least once (SQS, and the catalog's relay), and several replicas consume the
queue, so a notification's key is derived from the event alone (`<occurred_at>#<event id>`,
which also sorts newest first) and written with a condition that it does not exist yet: the
same event handled twice leaves one notification per owner. A message is deleted only after
every owner's notification is written; a failure leaves it to come back after the queue's
visibility timeout. A message that cannot be read as such an event is malformed: it is made
visible again at once, and SQS's redrive moves it to the dead-letter queue after
maxReceiveCount receives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.errors import NotFound
from cloudshelf.runtime.idempotency import cancellation_reasons
from cloudshelf.runtime.queues import (
    ConsumerPolicy,
    MalformedMessage,
    QueueConsumer,
    QueueMessage,
)
from cloudshelf.runtime.validation import control_character_problem

log = logging.getLogger("cloudshelf.cart.notifications")

# The rule that routes the catalog's price changes to the cart's queue.
PRICE_CHANGES_PATTERN: dict[str, Any] = {
    "source": ["cloudshelf.catalog"],
    "detail-type": ["book.updated"],
    "detail": {"data": {"price_changed": [True]}},
}
BOOK_UPDATED = "book.updated"
# The seed's retention of in-app notifications.
NOTIFICATION_TTL = timedelta(days=30)
# An event id is a UUID; anything far longer is not one of ours.
MAX_EVENT_ID_LENGTH = 64
# `<occurred_at>#<event id>`: 27 + 1 + at most MAX_EVENT_ID_LENGTH characters.
MAX_NOTIFICATION_ID_LENGTH = 100
# Notifications written at once for one event.
WRITE_CONCURRENCY = 16


@dataclass(frozen=True)
class PriceChange:
    """What a notification says, read from one `book.updated` event."""

    event_id: str
    occurred_at: datetime
    book_id: int
    title: str
    old_price: common_pb2.Money
    new_price: common_pb2.Money
    traceparent: str
    tracestate: str

    @property
    def notification_id(self) -> str:
        # Fixed-width time first: the sort key orders an owner's notifications by time.
        return f"{self.occurred_at:%Y-%m-%dT%H:%M:%S.%fZ}#{self.event_id}"


def read_price_change(body: str) -> PriceChange | None:
    """The price change an SQS message from the rule carries; None for a well-formed
    catalog event that changes no price (nothing to notify). MalformedMessage otherwise."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedMessage("the body is not JSON") from None
    detail = message.get("detail") if isinstance(message, dict) else None
    if not isinstance(detail, dict):
        raise MalformedMessage("no EventBridge `detail` object")
    data = detail.get("data")
    envelope = common_pb2.EventEnvelope()
    try:
        json_format.ParseDict(
            {k: v for k, v in detail.items() if k != "data"}, envelope, ignore_unknown_fields=True
        )
    except (json_format.ParseError, RecursionError):
        raise MalformedMessage("the detail is not an EventEnvelope") from None
    if envelope.type != BOOK_UPDATED:
        return None
    if envelope.data_type != catalog_pb2.BookUpdatedEvent.DESCRIPTOR.full_name:
        raise MalformedMessage("a book.updated event whose data_type is not BookUpdatedEvent")
    event_id = envelope.id
    if not event_id or len(event_id) > MAX_EVENT_ID_LENGTH or control_character_problem(event_id):
        raise MalformedMessage("the event id is missing or not an id")
    if not envelope.HasField("occurred_at"):
        raise MalformedMessage("the event has no occurred_at")
    if not isinstance(data, dict):
        raise MalformedMessage("the event's data is not an object")
    updated = catalog_pb2.BookUpdatedEvent()
    try:
        json_format.ParseDict(data, updated, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError):
        raise MalformedMessage("the event's data is not a BookUpdatedEvent") from None
    if not updated.price_changed:
        return None
    if updated.book_id <= 0:
        raise MalformedMessage("the event names no book")
    return PriceChange(
        event_id=event_id,
        occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
        book_id=updated.book_id,
        title=updated.after.title,
        old_price=updated.before.price,
        new_price=updated.after.price,
        traceparent=envelope.traceparent,
        tracestate=envelope.tracestate,
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def notification_from_item(item: dict[str, Any]) -> cart_pb2.Notification:
    """The Notification of a stored item (attributes in DynamoDB's typed form)."""

    def text(name: str) -> str:
        return str(item.get(name, {}).get("S", ""))

    def number(name: str) -> int:
        return int(item.get(name, {}).get("N", "0"))

    def money(prefix: str) -> common_pb2.Money:
        return common_pb2.Money(
            minor_units=number(f"{prefix}PriceMinor"), currency_code=text(f"{prefix}Currency")
        )

    return cart_pb2.Notification(
        id=text("notificationId"),
        book_id=int(text("bookId") or 0),
        title=text("title"),
        old_price=money("old"),
        new_price=money("new"),
        create_time=_timestamp(datetime.fromisoformat(text("createdAt"))),
        read=bool(item.get("read", {}).get("BOOL", False)),
        expire_time=_timestamp(datetime.fromtimestamp(number("expiresAt"), UTC)),
    )


class NotificationStore:
    """The owners' notifications in DynamoDB: one item per (owner key, notification id),
    with expiresAt (TTL). Expired items read as absent before DynamoDB deletes them."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    async def add_once(self, owner: str, change: PriceChange, now: float) -> bool:
        """Stores the owner's notification of the change unless it is there already;
        True when this call stored it."""
        expires = int(now + NOTIFICATION_TTL.total_seconds())
        item = {
            "owner": {"S": owner},
            "notificationId": {"S": change.notification_id},
            "eventId": {"S": change.event_id},
            "bookId": {"S": str(change.book_id)},
            "title": {"S": change.title},
            "oldPriceMinor": {"N": str(change.old_price.minor_units)},
            "oldCurrency": {"S": change.old_price.currency_code},
            "newPriceMinor": {"N": str(change.new_price.minor_units)},
            "newCurrency": {"S": change.new_price.currency_code},
            "createdAt": {"S": change.occurred_at.isoformat()},
            "read": {"BOOL": False},
            "expiresAt": {"N": str(expires)},
        }
        try:
            await self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(notificationId)",
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False  # the same event, handled before (a redelivery, another replica)
        return True

    async def newest_first(
        self, owner: str, count: int, *, after: str | None, unread_only: bool
    ) -> list[cart_pb2.Notification]:
        """Up to `count` of the owner's live notifications, newest first, starting after
        the notification id `after`."""
        now = int(time.time())
        condition = "expiresAt > :now" + (" AND #read = :false" if unread_only else "")
        values: dict[str, Any] = {":owner": {"S": owner}, ":now": {"N": str(now)}}
        names = {"#owner": "owner"}
        if unread_only:
            values[":false"] = {"BOOL": False}
            names["#read"] = "read"
        start = {"owner": {"S": owner}, "notificationId": {"S": after}} if after else None
        found: list[cart_pb2.Notification] = []
        while len(found) < count:
            params: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "#owner = :owner",
                "FilterExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ScanIndexForward": False,
                # The filter applies after the limit: read a little more than needed.
                "Limit": max(count - len(found), 25),
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            answer = await self.client.query(**params)
            found += [notification_from_item(item) for item in answer.get("Items", [])]
            start = answer.get("LastEvaluatedKey")
            if start is None:
                break
        return found[:count]

    async def mark_read(self, owner: str, ids: Sequence[str]) -> None:
        """Marks the owner's notifications `ids` read, all or none: NOT_FOUND naming the
        first id that is not a live notification of the owner."""
        now = str(int(time.time()))
        try:
            await self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"owner": {"S": owner}, "notificationId": {"S": one}},
                            "UpdateExpression": "SET #read = :true",
                            # Never creates an item: an id of another owner's is not ours.
                            "ConditionExpression": "attribute_exists(notificationId) "
                            "AND expiresAt > :now",
                            "ExpressionAttributeNames": {"#read": "read"},
                            "ExpressionAttributeValues": {
                                ":true": {"BOOL": True},
                                ":now": {"N": now},
                            },
                        }
                    }
                    for one in ids
                ]
            )
        except ClientError as exc:
            if _error_code(exc) != "TransactionCanceledException":
                raise
            reasons = cancellation_reasons(exc)
            missing = next(
                (ids[i] for i, code in enumerate(reasons) if code == "ConditionalCheckFailed"),
                None,
            )
            if missing is None:
                raise
            raise NotFound(
                "no such notification of the caller's",
                reason="NOTIFICATION_NOT_FOUND",
                metadata={"notification_id": missing},
            ) from exc

    async def mark_all_read(self, owner: str) -> int:
        """Marks every unread live notification of the owner read; returns how many."""
        now = str(int(time.time()))
        marked = 0
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "#owner = :owner",
                "FilterExpression": "#read = :false AND expiresAt > :now",
                "ProjectionExpression": "notificationId",
                "ExpressionAttributeNames": {"#owner": "owner", "#read": "read"},
                "ExpressionAttributeValues": {
                    ":owner": {"S": owner},
                    ":false": {"BOOL": False},
                    ":now": {"N": now},
                },
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            answer = await self.client.query(**params)
            ids = [item["notificationId"]["S"] for item in answer.get("Items", [])]
            for chunk in range(0, len(ids), WRITE_CONCURRENCY):
                done = await asyncio.gather(
                    *(self._mark_one(owner, one) for one in ids[chunk : chunk + WRITE_CONCURRENCY])
                )
                marked += sum(done)
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return marked

    async def _mark_one(self, owner: str, notification_id: str) -> bool:
        try:
            await self.client.update_item(
                TableName=self.table,
                Key={"owner": {"S": owner}, "notificationId": {"S": notification_id}},
                UpdateExpression="SET #read = :true",
                ConditionExpression="attribute_exists(notificationId)",
                ExpressionAttributeNames={"#read": "read"},
                ExpressionAttributeValues={":true": {"BOOL": True}},
            )
        except ClientError as exc:
            if _error_code(exc) != "ConditionalCheckFailedException":
                raise
            return False  # deleted (expired) meanwhile
        return True


class BookHolders:
    """The BookHolders index (pk bookId, sk owner), kept by the stream processor."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    async def owners(self, book_id: int, now: float) -> list[str]:
        """The owner keys whose live carts hold the book."""
        owners: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "bookId = :book",
                "ProjectionExpression": "#owner, expiresAt",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {":book": {"S": str(book_id)}},
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            answer = await self.client.query(**params)
            for item in answer.get("Items", []):
                expires = item.get("expiresAt", {}).get("N")
                # A row of an expired cart is not a holder, before DynamoDB deletes it.
                if expires is None or int(expires) > now:
                    owners.append(item["owner"]["S"])
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return owners


VISIBILITY_ENV = "CLOUDSHELF_CART_PRICE_CHANGES_VISIBILITY_SECONDS"


def consumer_policy(environ: Mapping[str, str] | None = None) -> ConsumerPolicy:
    """The queue consumer's policy: CLOUDSHELF_CART_PRICE_CHANGES_VISIBILITY_SECONDS (whole
    seconds, at least 1; renewed every half of it while an event's notifications are
    written, so a large fan-out is not handed to a second replica meanwhile)."""
    return ConsumerPolicy.from_env(VISIBILITY_ENV, environ)


class PriceChangeConsumer:
    """Consumes the price-change queue until cancelled (see the module's docstring), on
    the runtime's QueueConsumer: one span "price change process" per message."""

    def __init__(
        self,
        sqs: Any,
        queue_name: str,
        holders: BookHolders,
        notifications: NotificationStore,
        policy: ConsumerPolicy | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.holders = holders
        self.notifications = notifications
        self.consumer = QueueConsumer(
            sqs,
            queue_name,
            "price change",
            handle_each=self.handle,
            policy=policy,
            tracer_provider=tracer_provider,
        )

    async def run(self) -> None:
        await self.consumer.run()

    async def handle(self, message: QueueMessage) -> None:
        """One message's notifications stored (the consumer deletes it afterwards)."""
        change = read_price_change(message.body)
        if change is None:
            return
        span = trace.get_current_span()
        span.set_attributes(
            {"cloudshelf.event.id": change.event_id, "cloudshelf.book.id": change.book_id}
        )
        owners, stored = await self.notify(change)
        span.set_attributes(
            {"cloudshelf.notifications.owners": owners, "cloudshelf.notifications.stored": stored}
        )

    async def notify(self, change: PriceChange) -> tuple[int, int]:
        """Stores the change's notification for every owner holding the book; returns
        (owners, notifications stored by this call)."""
        now = time.time()
        owners = await self.holders.owners(change.book_id, now)
        stored = 0
        for chunk in range(0, len(owners), WRITE_CONCURRENCY):
            done = await asyncio.gather(
                *(
                    self.notifications.add_once(owner, change, now)
                    for owner in owners[chunk : chunk + WRITE_CONCURRENCY]
                )
            )
            stored += sum(done)
        return len(owners), stored
