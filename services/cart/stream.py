"""The cart's events, from the ShoppingCart table's DynamoDB stream (NEW_AND_OLD_IMAGES).

Every cart write is one UpdateItem of one item, so the table's stream holds each change
with the cart before and after it. `record_outcome` turns one stream record into events
(by diffing the old and new image's lines) and changes of the book-holders index; it is
pure, and an event's id is derived from the record (stream ARN, sequence number, event type,
book id), so reading a record again yields the same events with the same ids.

`CartStreamProcessor` reads the stream in every replica of the cart server:
- the stream's shards are shared by leases in `<cart table>-StreamLeases`: a replica takes
  a shard whose lease is free or expired with a conditional write, renews it every third
  of the lease, and a dead replica's shards are taken over once its leases expire (expiry
  times are wall-clock: replicas' clocks must agree to well within a lease);
- a shard is read from its checkpoint (TRIM_HORIZON when it has none), a child shard only
  after its parent is read to its end;
- per batch of records: the index is written, the events are published, and only then is
  the checkpoint moved, to the last record whose events were all delivered (at-least-once:
  after a crash the records since the checkpoint are read again, with the same event ids);
- while the bus fails, nothing is checkpointed past an unpublished event and the shard is
  read again from its checkpoint after a backoff; the leases are renewed meanwhile.

Decisions on what publishes what:
- INSERT/MODIFY: per line, cart.item.added / cart.item.updated / cart.item.removed; a
  ClearCart that empties a cart with lines is one cart.cleared; a write that changes
  `lastMerge` (tables.LAST_MERGE) is one cart.merged. A line of more than 5 copies (checked
  against the catalog's stock, which the line keeps as `stockSeen`) that leaves less than
  the threshold in stock also publishes inventory.low.
- Lines of an expired cart replaced by a new one are not "removed": the cart had already
  expired (it read as empty).
- REMOVE publishes nothing: a cart item is deleted by TTL (the cart had already expired).
  Nor does a merged session's tombstone (tables.MERGED_INTO) in place of its cart: the
  merge is cart.merged on the user's cart, which names the session.
- The book-holders index follows every record: each line the write added or changed is
  put (every line of the cart when its expiry moves to a later day: a row's expiresAt is
  the cart's rounded up to a day), each line gone is deleted.

Polls, lease upkeep and index-only batches run with instrumentation suppressed; a batch that
publishes is one span, linked to the traces of the requests that wrote the cart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.config import env_float
from cloudshelf.runtime.events import DeliveryFailure, Event, Publisher, event_data, trace_links
from services.cart.store import STOCK_CHECK_ABOVE
from services.cart.tables import (
    LAST_MERGE,
    LAST_OPERATION,
    MERGED_INTO,
    SESSION_OWNER_PREFIX,
    STOCK_SEEN,
    TRACEPARENT,
    TRACESTATE,
    TTL_ATTRIBUTE,
    USER_OWNER_PREFIX,
    book_holders_table_name,
    stream_leases_table_name,
)

log = logging.getLogger("cloudshelf.cart.stream")

EVENT_SOURCE = "cloudshelf.cart"
# A shard's checkpoint once it is closed and read to its end: its children may start.
SHARD_END = "SHARD_END"
# The namespace of event ids (uuid5 over the record and the event).
EVENT_ID_NAMESPACE = uuid.UUID("5b0f6a52-3f8e-4f0c-9a57-0c2a1d9e7c41")
# A book-holders row expires at its cart's expiry rounded up to this (seconds).
HOLDER_EXPIRY_STEP = 86400
# BatchWriteItem takes at most 25 requests.
BATCH_WRITE_MAX = 25

_deserializer = TypeDeserializer()


@dataclass(frozen=True)
class StreamPolicy:
    """How the processor polls, leases and backs off (seconds unless named)."""

    poll_interval: float = 1.0
    # A lease not renewed for this long is another replica's to take (a dead replica's
    # shards are taken over after it). Renewed every third of it.
    lease: float = 12.0
    # How often the stream's shards are listed (new shards after a split or a re-enable).
    shard_sync_interval: float = 30.0
    # GetRecords Limit (at most 1000).
    batch_size: int = 100
    # Longest pause while the bus or the table fails.
    max_backoff: float = 30.0
    # inventory.low when a checked line leaves fewer than this many copies in stock.
    low_stock_threshold: int = 5
    # A finished shard's lease row expires after the stream's 24 h retention and a margin.
    finished_shard_retention: float = 48 * 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StreamPolicy:
        """CLOUDSHELF_CART_STREAM_POLL_SECONDS, CLOUDSHELF_CART_STREAM_LEASE_SECONDS,
        CLOUDSHELF_CART_LOW_STOCK_THRESHOLD."""
        default = cls()
        return cls(
            poll_interval=env_float(
                "CLOUDSHELF_CART_STREAM_POLL_SECONDS", default.poll_interval, environ
            ),
            lease=env_float("CLOUDSHELF_CART_STREAM_LEASE_SECONDS", default.lease, environ),
            low_stock_threshold=int(
                env_float(
                    "CLOUDSHELF_CART_LOW_STOCK_THRESHOLD", default.low_stock_threshold, environ
                )
            ),
        )


# --- records to events (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class HolderChange:
    """A row of the book-holders index: put (expires_at set) or deleted (None)."""

    book_id: int
    owner: str
    expires_at: int | None


@dataclass(frozen=True)
class RecordOutcome:
    sequence_number: str
    events: list[Event]
    holders: list[HolderChange]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_plain(v) for v in value]
    return value


def _image(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {name: _plain(_deserializer.deserialize(value)) for name, value in raw.items()}


def _lines(image: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    stored = (image or {}).get("items") or {}
    return {int(line["bookId"]): line for line in stored.values()} if stored else {}


def owner_of(key: str) -> cart_pb2.CartOwner | None:
    """The CartOwner of an owner key ("user#<sub>" / "session#<id>"); None: not a cart's."""
    if key.startswith(USER_OWNER_PREFIX):
        return cart_pb2.CartOwner(user_id=key.removeprefix(USER_OWNER_PREFIX))
    if key.startswith(SESSION_OWNER_PREFIX):
        return cart_pb2.CartOwner(session_id=key.removeprefix(SESSION_OWNER_PREFIX))
    return None


def _written_at(image: Mapping[str, Any], fallback: datetime) -> int:
    """The write's own clock: the `now` its conditions compared expiresAt with."""
    try:
        return int(datetime.fromisoformat(str(image["lastModified"])).timestamp())
    except (KeyError, ValueError):
        return int(fallback.timestamp())


def _money(line: Mapping[str, Any], currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=int(line.get("priceMinor", 0)), currency_code=currency)


def holder_expiry(cart_expires_at: int) -> int:
    """A book-holders row's expiresAt: its cart's, rounded up to a whole day (UTC), so that
    the rows are rewritten once a day per active cart rather than on every write."""
    return -(-cart_expires_at // HOLDER_EXPIRY_STEP) * HOLDER_EXPIRY_STEP


def event_id(stream_arn: str, sequence_number: str, event_type: str, book_id: int | None) -> str:
    """The id of an event: the same for the same record, whoever reads it and how often."""
    name = f"{stream_arn}|{sequence_number}|{event_type}|{'' if book_id is None else book_id}"
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


def record_outcome(
    record: Mapping[str, Any], stream_arn: str, low_stock_threshold: int
) -> RecordOutcome:
    """The events and index changes of one stream record (see the module's docstring)."""
    change = record["dynamodb"]
    sequence = str(change["SequenceNumber"])
    created = change.get("ApproximateCreationDateTime")
    occurred_at = created if isinstance(created, datetime) else datetime.now(UTC)
    old = _image(change.get("OldImage"))
    new = _image(change.get("NewImage"))
    key = str(_image(change["Keys"])["userId"])  # type: ignore[index]
    owner = owner_of(key)
    if owner is None:
        return RecordOutcome(sequence, [], [])
    old_lines = _lines(old)
    if new is None or MERGED_INTO in new:  # REMOVE (TTL), or a merge's tombstone
        gone = [HolderChange(book, key, None) for book in sorted(old_lines)]
        return RecordOutcome(sequence, [], gone)

    new_lines = _lines(new)
    expires_at = holder_expiry(int(new.get(TTL_ATTRIBUTE, 0)))
    # Every row of the cart is put again when its expiry moves to a later day, otherwise
    # only the rows of lines this write changed: a row never expires before its cart.
    refresh_all = old is None or holder_expiry(int(old.get(TTL_ATTRIBUTE, 0))) != expires_at
    holders = [
        HolderChange(book, key, expires_at)
        for book, line in sorted(new_lines.items())
        if refresh_all or line != old_lines.get(book)
    ]
    holders += [HolderChange(book, key, None) for book in sorted(set(old_lines) - set(new_lines))]
    # Lines of a cart that had expired before this write were not removed by it.
    if old is not None and int(old.get(TTL_ATTRIBUTE, 0)) <= _written_at(new, occurred_at):
        old_lines = {}
    currency = str(new.get("currency", "USD"))
    version = int(new.get("version", 0))
    events: list[Event] = []

    def emit(event_type: str, data: Message, book_id: int | None = None) -> None:
        subject, subject_version = (key, version)
        if event_type == "inventory.low":
            subject, subject_version = (str(book_id), 0)
        events.append(
            Event(
                id=event_id(stream_arn, sequence, event_type, book_id),
                type=event_type,
                subject=subject,
                aggregate_version=subject_version,
                data_type=data.DESCRIPTOR.full_name,
                data=event_data(data),
                traceparent=str(new.get(TRACEPARENT) or "") or None,
                tracestate=str(new.get(TRACESTATE) or "") or None,
                occurred_at=occurred_at,
            )
        )

    if new.get(LAST_MERGE) and new.get(LAST_MERGE) != (old or {}).get(LAST_MERGE):
        merged = [
            cart_pb2.CartEventLine(
                book_id=book,
                quantity=int(line["quantity"]),
                added_quantity=int(line["quantity"])
                - int(old_lines.get(book, {}).get("quantity", 0)),
                unit_price=_money(line, currency),
            )
            for book, line in sorted(new_lines.items())
            if int(line["quantity"]) != int(old_lines.get(book, {}).get("quantity", 0))
        ]
        session = str(new[LAST_MERGE].get("sessionId", ""))
        emit(
            "cart.merged",
            cart_pb2.CartMergedEvent(owner=owner, from_session_id=session, merged=merged),
        )
        return RecordOutcome(sequence, events, holders)

    if not new_lines and old_lines and new.get(LAST_OPERATION) == "ClearCart":
        removed = [
            cart_pb2.CartEventLine(
                book_id=book, quantity=int(line["quantity"]), unit_price=_money(line, currency)
            )
            for book, line in sorted(old_lines.items())
        ]
        emit("cart.cleared", cart_pb2.CartClearedEvent(owner=owner, removed=removed))
        return RecordOutcome(sequence, events, holders)

    for book in sorted(set(old_lines) | set(new_lines)):
        before, after = old_lines.get(book), new_lines.get(book)
        if after is None:
            assert before is not None
            emit(
                "cart.item.removed",
                cart_pb2.CartItemRemovedEvent(
                    owner=owner,
                    book_id=book,
                    previous_quantity=int(before["quantity"]),
                    unit_price=_money(before, currency),
                ),
                book,
            )
            continue
        quantity = int(after["quantity"])
        if before is None:
            emit(
                "cart.item.added",
                cart_pb2.CartItemAddedEvent(
                    owner=owner, book_id=book, quantity=quantity, unit_price=_money(after, currency)
                ),
                book,
            )
        elif int(before["quantity"]) != quantity:
            emit(
                "cart.item.updated",
                cart_pb2.CartItemUpdatedEvent(
                    owner=owner,
                    book_id=book,
                    quantity=quantity,
                    previous_quantity=int(before["quantity"]),
                    unit_price=_money(after, currency),
                ),
                book,
            )
        else:
            continue  # this line did not change
        stock = after.get(STOCK_SEEN)
        if (
            stock is not None
            and quantity > STOCK_CHECK_ABOVE
            and int(stock) - quantity < low_stock_threshold
        ):
            emit(
                "inventory.low",
                cart_pb2.InventoryLowEvent(
                    book_id=book,
                    stock_quantity=int(stock),
                    threshold=low_stock_threshold,
                    cart_quantity=quantity,
                ),
                book,
            )
    return RecordOutcome(sequence, events, holders)


def delivered_prefix(
    outcomes: Sequence[RecordOutcome], failures: Sequence[DeliveryFailure | None]
) -> tuple[str | None, bool]:
    """The sequence number up to which every record's events were delivered (None: not
    the first), and whether a retryable failure stopped it. An event the bus refuses as
    invalid can never be sent: it is logged and passed over, so that it cannot stop its
    shard for good."""
    position = 0
    done: str | None = None
    for outcome in outcomes:
        results = failures[position : position + len(outcome.events)]
        position += len(outcome.events)
        if any(failure is not None and failure.retryable for failure in results):
            return done, True
        for event, failure in zip(outcome.events, results, strict=True):
            if failure is not None:
                log.error(
                    "cart event %s (%s) refused by the bus: %s",
                    event.id,
                    event.type,
                    failure.reason,
                )
        done = outcome.sequence_number
    return done, False


def eligible_shards(rows: Sequence[Mapping[str, Any]], now: float, worker: str) -> list[str]:
    """Shards that `worker` may take: not finished, not leased by another live worker, and
    whose parent (if still known) is read to its end."""
    finished = {row["shardId"] for row in rows if row.get("checkpoint") == SHARD_END}
    known = {row["shardId"] for row in rows}
    eligible = []
    for row in sorted(rows, key=lambda r: str(r["shardId"])):
        if row["shardId"] in finished:
            continue
        parent = row.get("parentShardId")
        if parent and parent in known and parent not in finished:
            continue
        holder = row.get("leaseOwner")
        if holder and holder != worker and float(row.get("leaseExpiresAt", 0)) > now:
            continue
        eligible.append(str(row["shardId"]))
    return eligible


# --- the processor -----------------------------------------------------------------------


class LeaseLost(Exception):
    """Another replica holds the shard now: this one stops reading it."""


@dataclass
class OwnedShard:
    shard_id: str
    stream_arn: str
    # The last sequence number whose events were all published (None: from the start).
    checkpoint: str | None
    iterator: str | None = None
    # The checkpoint was trimmed away (older than 24 h): read from the oldest record.
    trimmed: bool = False


@dataclass
class PollResult:
    records: int = 0
    published: int = 0
    # The bus (or a table) failed: back off.
    failed: bool = False
    # A shard returned a full batch: more are waiting.
    more: bool = False


@dataclass
class _Loop:
    failures: int = 0
    resume_at: float = 0.0
    leases_due: float = 0.0
    owned: dict[str, OwnedShard] = field(default_factory=dict)


class CartStreamProcessor:
    """Publishes the cart's events from its table's stream (see the module's docstring)."""

    def __init__(
        self,
        dynamodb: Any,
        streams: Any,
        publisher: Publisher,
        cart_table: str,
        policy: StreamPolicy | None = None,
        *,
        worker_id: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.dynamodb = dynamodb
        self.streams = streams
        self.publisher = publisher
        self.cart_table = cart_table
        self.leases = stream_leases_table_name(cart_table)
        self.holders = book_holders_table_name(cart_table)
        self.policy = policy or StreamPolicy()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._state = _Loop()
        self._known_shards: set[str] = set()
        self._next_sync = 0.0
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    # --- leases --------------------------------------------------------------------------

    async def sync_shards(self) -> None:
        """Lists the stream's shards and adds a lease row for each new one."""
        table = await self.dynamodb.describe_table(TableName=self.cart_table)
        stream_arn = table["Table"].get("LatestStreamArn")
        if not stream_arn:
            raise RuntimeError(f"table {self.cart_table} has no stream")
        shards: list[dict[str, Any]] = []
        params: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            description = (await self.streams.describe_stream(**params))["StreamDescription"]
            shards += description.get("Shards", [])
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            params["ExclusiveStartShardId"] = last
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._known_shards:
                continue
            item: dict[str, Any] = {"shardId": {"S": shard_id}, "streamArn": {"S": stream_arn}}
            if shard.get("ParentShardId"):
                item["parentShardId"] = {"S": shard["ParentShardId"]}
            try:
                await self.dynamodb.put_item(
                    TableName=self.leases,
                    Item=item,
                    ConditionExpression="attribute_not_exists(shardId)",
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
            self._known_shards.add(shard_id)

    async def _lease_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"TableName": self.leases, "ConsistentRead": True}
        while True:
            page = await self.dynamodb.scan(**params)
            rows += [_image(item) or {} for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return rows
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def maintain_leases(self) -> None:
        """Renews this worker's leases, drops the lost ones and takes free or expired ones
        up to a fair share (shards / live workers)."""
        owned = self._state.owned
        for shard_id in list(owned):
            try:
                await self._renew(shard_id)
            except LeaseLost:
                log.warning("lost the lease of shard %s to another replica", shard_id)
                owned.pop(shard_id, None)
        if time.monotonic() >= self._next_sync:
            await self.sync_shards()
            self._next_sync = time.monotonic() + self.policy.shard_sync_interval
        now = time.time()
        rows = await self._lease_rows()
        live_workers = {
            row["leaseOwner"]
            for row in rows
            if row.get("leaseOwner") and float(row.get("leaseExpiresAt", 0)) > now
        } | {self.worker_id}
        active = [row for row in rows if row.get("checkpoint") != SHARD_END]
        share = max(1, math.ceil(len(active) / len(live_workers)))
        for shard_id in eligible_shards(rows, now, self.worker_id):
            if len(owned) >= share:
                break
            if shard_id in owned:
                continue
            taken = await self._take(shard_id, now)
            if taken is not None:
                owned[shard_id] = taken
                log.info("took the lease of shard %s (checkpoint %s)", shard_id, taken.checkpoint)

    async def _take(self, shard_id: str, now: float) -> OwnedShard | None:
        try:
            answer = await self.dynamodb.update_item(
                TableName=self.leases,
                Key={"shardId": {"S": shard_id}},
                UpdateExpression="SET leaseOwner = :me, leaseExpiresAt = :expires",
                ConditionExpression=(
                    "attribute_exists(shardId) "
                    "AND (attribute_not_exists(checkpoint) OR checkpoint <> :end) "
                    "AND (attribute_not_exists(leaseOwner) OR leaseOwner = :me "
                    "OR leaseExpiresAt < :now)"
                ),
                ExpressionAttributeValues={
                    ":me": {"S": self.worker_id},
                    ":expires": {"N": repr(now + self.policy.lease)},
                    ":now": {"N": repr(now)},
                    ":end": {"S": SHARD_END},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None  # another replica was quicker
            raise
        row = _image(answer["Attributes"]) or {}
        return OwnedShard(shard_id, str(row["streamArn"]), row.get("checkpoint"))

    async def _lease_write(self, shard_id: str, update: str, values: dict[str, Any]) -> None:
        try:
            await self.dynamodb.update_item(
                TableName=self.leases,
                Key={"shardId": {"S": shard_id}},
                UpdateExpression=update,
                ConditionExpression="leaseOwner = :me",
                ExpressionAttributeValues={":me": {"S": self.worker_id}, **values},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise LeaseLost(shard_id) from exc
            raise

    async def _renew(self, shard_id: str) -> None:
        expires = time.time() + self.policy.lease
        await self._lease_write(
            shard_id, "SET leaseExpiresAt = :expires", {":expires": {"N": repr(expires)}}
        )

    async def _checkpoint(self, shard: OwnedShard, sequence_number: str) -> None:
        expires = time.time() + self.policy.lease
        await self._lease_write(
            shard.shard_id,
            "SET checkpoint = :sequence, leaseExpiresAt = :expires",
            {":sequence": {"S": sequence_number}, ":expires": {"N": repr(expires)}},
        )
        shard.checkpoint = sequence_number

    async def _finish(self, shard: OwnedShard) -> None:
        """The shard is closed and read to its end: its children may start."""
        expires = int(time.time() + self.policy.finished_shard_retention)
        await self._lease_write(
            shard.shard_id,
            f"SET checkpoint = :end, {TTL_ATTRIBUTE} = :expires REMOVE leaseOwner, leaseExpiresAt",
            {":end": {"S": SHARD_END}, ":expires": {"N": str(expires)}},
        )
        self._state.owned.pop(shard.shard_id, None)
        log.info("shard %s read to its end", shard.shard_id)

    async def release_leases(self) -> None:
        """Gives this worker's leases up (on shutdown): another replica takes them at once."""
        for shard_id in list(self._state.owned):
            try:
                await self._lease_write(shard_id, "REMOVE leaseOwner, leaseExpiresAt", {})
            except Exception as exc:  # it expires by itself
                log.warning("could not release the lease of shard %s: %s", shard_id, exc)
        self._state.owned.clear()

    # --- reading -------------------------------------------------------------------------

    async def _iterator(self, shard: OwnedShard) -> str:
        params: dict[str, Any] = {"StreamArn": shard.stream_arn, "ShardId": shard.shard_id}
        if shard.checkpoint and not shard.trimmed:
            params.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.checkpoint
            )
        else:
            params["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            return str((await self.streams.get_shard_iterator(**params))["ShardIterator"])
        except ClientError as exc:
            if _code(exc) != "TrimmedDataAccessException":
                raise
            self._trimmed(shard)
            return await self._iterator(shard)

    def _trimmed(self, shard: OwnedShard) -> None:
        log.error(
            "shard %s: records after checkpoint %s were trimmed (older than the stream's "
            "retention) before they were read: their events are lost",
            shard.shard_id,
            shard.checkpoint,
        )
        shard.trimmed = True
        shard.iterator = None

    async def poll_once(self) -> PollResult:
        """One GetRecords per owned shard; publishes and checkpoints what it read."""
        result = PollResult()
        for shard in list(self._state.owned.values()):
            try:
                await self._poll_shard(shard, result)
            except LeaseLost:
                log.warning("lost the lease of shard %s to another replica", shard.shard_id)
                self._state.owned.pop(shard.shard_id, None)
        return result

    async def _poll_shard(self, shard: OwnedShard, result: PollResult) -> None:
        with suppress_instrumentation():
            try:
                if shard.iterator is None:
                    shard.iterator = await self._iterator(shard)
                response = await self.streams.get_records(
                    ShardIterator=shard.iterator, Limit=self.policy.batch_size
                )
            except ClientError as exc:
                code = _code(exc)
                if code == "ExpiredIteratorException":  # 15 minutes old: from the checkpoint
                    shard.iterator = None
                    return
                if code == "TrimmedDataAccessException":
                    self._trimmed(shard)
                    return
                if code == "ResourceNotFoundException":  # the stream was disabled
                    log.error("shard %s: its stream is gone, given up", shard.shard_id)
                    await self._finish(shard)
                    return
                raise
        records = response.get("Records", [])
        if records:
            outcomes = [
                record_outcome(record, shard.stream_arn, self.policy.low_stock_threshold)
                for record in records
            ]
            done, failed = await self._deliver(shard, outcomes, result)
            if done is not None:
                with suppress_instrumentation():
                    await self._checkpoint(shard, done)
            result.records += len(records)
            if failed:
                # Read again from the checkpoint, after the loop's backoff.
                result.failed = True
                shard.iterator = None
                return
            shard.trimmed = False
            result.more |= len(records) >= self.policy.batch_size
        shard.iterator = response.get("NextShardIterator")
        if shard.iterator is None:
            with suppress_instrumentation():
                await self._finish(shard)

    async def _deliver(
        self, shard: OwnedShard, outcomes: Sequence[RecordOutcome], result: PollResult
    ) -> tuple[str | None, bool]:
        """Index changes, then events; returns the checkpoint they allow and whether a
        retryable failure stopped them."""
        events = [event for outcome in outcomes for event in outcome.events]
        if not events:
            with suppress_instrumentation():
                await self._apply_holders(outcomes)
            return outcomes[-1].sequence_number, False
        with self._tracer.start_as_current_span(
            "cart stream batch",
            context=Context(),  # a root: the batch serves many requests, linked below
            kind=SpanKind.PRODUCER,
            links=list(trace_links(events)),
            attributes={
                "messaging.operation.type": "send",
                "messaging.batch.message_count": len(events),
                "cloudshelf.cart.stream.shard": shard.shard_id,
                "cloudshelf.cart.stream.records": len(outcomes),
            },
        ) as span:
            await self._apply_holders(outcomes)
            failures = await self._publish(events)
            done, failed = delivered_prefix(outcomes, failures)
            delivered = sum(1 for failure in failures if failure is None)
            result.published += delivered
            span.set_attributes({"cloudshelf.cart.stream.delivered": delivered})
        if failed:
            reason = next(f.reason for f in failures if f is not None and f.retryable)
            log.warning(
                "cart events not delivered, shard %s read again from %s: %s",
                shard.shard_id,
                done or shard.checkpoint,
                reason,
            )
        return done, failed

    async def _publish(self, events: Sequence[Event]) -> list[DeliveryFailure | None]:
        try:
            return await self.publisher.publish(events)
        except Exception as exc:  # counted as a failure of the bus: retried after a backoff
            log.exception("cart event publisher failed")
            failure = DeliveryFailure(type(exc).__name__, str(exc), retryable=True, bus_failed=True)
            return [failure] * len(events)

    async def _apply_holders(self, outcomes: Sequence[RecordOutcome]) -> None:
        """Writes the index changes of the records; for each row only its last change
        counts (the records of one cart are in order within its shard)."""
        final: dict[tuple[int, str], int | None] = {}
        for outcome in outcomes:
            for change in outcome.holders:
                final[(change.book_id, change.owner)] = change.expires_at
        requests: list[dict[str, Any]] = []
        for (book_id, owner), expires_at in final.items():
            key = {"bookId": {"S": str(book_id)}, "owner": {"S": owner}}
            if expires_at is None:
                requests.append({"DeleteRequest": {"Key": key}})
            else:
                item = {**key, TTL_ATTRIBUTE: {"N": str(expires_at)}}
                requests.append({"PutRequest": {"Item": item}})
        for start in range(0, len(requests), BATCH_WRITE_MAX):
            pending = {self.holders: requests[start : start + BATCH_WRITE_MAX]}
            for attempt in range(8):
                answer = await self.dynamodb.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
            if pending:
                raise RuntimeError("the book-holders index kept refusing writes (throttled)")

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Processes the stream until cancelled, then gives its leases up. Leases are
        renewed on time also while the loop backs off."""
        state = self._state
        try:
            while True:
                now = time.monotonic()
                if now >= state.leases_due:
                    state.leases_due = now + self.policy.lease / 3
                    try:
                        with suppress_instrumentation():
                            await self.maintain_leases()
                    except Exception as exc:
                        log.warning("cart stream leases: %s: %s", type(exc).__name__, exc)
                        state.leases_due = now + min(self.policy.lease / 6, 1.0)
                if now >= state.resume_at:
                    result = PollResult()
                    try:
                        result = await self.poll_once()
                        state.failures = state.failures + 1 if result.failed else 0
                    except Exception as exc:
                        state.failures += 1
                        log.warning("cart stream poll failed (%s): %s", type(exc).__name__, exc)
                    if state.failures:
                        delay = min(
                            self.policy.poll_interval * 2**state.failures, self.policy.max_backoff
                        )
                        state.resume_at = time.monotonic() + delay * random.uniform(0.8, 1.0)
                    elif result.more:
                        state.resume_at = time.monotonic()
                    else:
                        state.resume_at = time.monotonic() + self.policy.poll_interval
                wake = min(state.resume_at, state.leases_due)
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
        finally:
            with suppress_instrumentation():
                await self.release_leases()


async def run_on_own_thread(
    make: Callable[[AsyncExitStack], Awaitable[CartStreamProcessor]],
) -> None:
    """Runs a processor, made by `make` with clients of its own, on a thread with its own
    event loop until cancelled (then it gives its leases up). Parsing a batch of large
    records (botocore walks every attribute of both images) takes long enough to hold up
    the server's calls when done on their loop."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    started = threading.Event()
    worker: dict[str, Any] = {}

    async def main() -> None:
        worker["loop"], worker["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        async with AsyncExitStack() as stack:
            await (await make(stack)).run()

    def finish() -> None:
        if not ended.done():
            ended.set_result(None)

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the cart stream processor stopped")
        finally:
            started.set()
            with contextlib.suppress(RuntimeError):  # the server's loop is closed
                loop.call_soon_threadsafe(finish)

    thread = threading.Thread(target=thread_main, name="cart-stream", daemon=True)
    thread.start()
    try:
        await asyncio.shield(ended)
    finally:
        await asyncio.to_thread(started.wait)
        if worker:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                worker["loop"].call_soon_threadsafe(worker["task"].cancel)
        await asyncio.to_thread(thread.join, 10.0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
