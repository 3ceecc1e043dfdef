"""Carts in DynamoDB, converted to and from the cart protos.

One item per cart, keyed (userId "user#<sub>", cartId "current"); an anonymous session's
cart is keyed userId "session#<id>" and carries `sessionId` (the SessionIndex). Its lines are a map
keyed by book id, so that every change is one conditional UpdateItem of one line (an
atomic ADD of a quantity, a SET or REMOVE of one key), never a read-modify-write of the
whole list: two racing writes both land. `lineCount` counts the map's keys so that the
line cap is a condition of the write, and `version`, added to by every write, is what the
cart's etag is derived from. Totals are computed from the lines on every read: they
cannot drift from them.

A write with an etag or a request_id is conditioned on the version it read (the etag must
still hold; the stored response of a request_id must be the cart the write produced); a
write with neither is conditioned only on what it changes (the line, its caps), so that
concurrent adds to one cart all land without retries. The merge of a session's cart into a
user's (`merge`) is one TransactWriteItems: the user's cart updated from the version read,
the session's cart replaced at the version read by a tombstone (tables.MERGED_INTO) that
every later write to it fails on, and the session bound to the user.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import metrics, propagate

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.errors import Aborted, FailedPrecondition, NotFound, Unauthenticated
from cloudshelf.runtime.idempotency import (
    DynamoDBIdempotencyKeys,
    IdempotentCall,
    cancellation_reasons,
)
from services.cart.tables import (
    CURRENT_CART,
    LAST_MERGE,
    LAST_OPERATION,
    MERGED_INTO,
    SESSION_OWNER_PREFIX,
    STOCK_SEEN,
    TRACEPARENT,
    TRACESTATE,
    USER_OWNER_PREFIX,
)

DEFAULT_CURRENCY = "USD"
# The seed's rule: 1..100 of one book; and at most 100 distinct books, which keeps a cart
# item far below DynamoDB's 400 KB (a line is well under 1 KB: titles are capped).
MAX_QUANTITY = 100
MAX_LINES = 100
# The seed's rule: a line of more than this many copies is checked against live stock.
STOCK_CHECK_ABOVE = 5
# The seed's retention: a cart expires 90 days after its last change.
CART_TTL = timedelta(days=90)
# Rounds of read-and-conditional-write before a write gives up with ABORTED: only racing
# writers that each need the version they read (etag or request_id) ever take more than 2.
MAX_ATTEMPTS = 64
# Counts each write attempt that a concurrent write made fail and that is run again.
WRITE_CONFLICTS_METRIC = "cloudshelf.cart.write_conflicts"
# How long a merged session's tombstone stays (tables.MERGED_INTO): longer than any call
# that resolved the session before the merge can still be running.
MERGED_TOMBSTONE_TTL = timedelta(hours=1)
# ErrorInfo reason: the session is bound to a signed-in user (services/cart/owners.py).
SESSION_SIGNED_IN = "SESSION_SIGNED_IN"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
Response = TypeVar("Response", bound=Message)


def user_owner_key(subject: str) -> str:
    """The cart's partition key for a signed-in user (the token's `sub`)."""
    return USER_OWNER_PREFIX + subject


def session_owner_key(session_id: str) -> str:
    """The cart's partition key for an anonymous session."""
    return SESSION_OWNER_PREFIX + session_id


def _timestamp(iso: str | None) -> Timestamp | None:
    if not iso:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def cart_etag(item: dict[str, Any] | None) -> str:
    """The AIP-154 etag of a stored cart item (None: no cart, or an expired one).

    Derived from the item's `version`, which every write increases, and its `lastModified`:
    the version alone would repeat once an expired cart is deleted and a new one counts
    from 1 again, and an etag kept from the old cart would then match. Never empty, also
    for no cart: a write that passes the empty cart's etag succeeds only while there is
    still no cart (an empty etag means no precondition at all).
    """
    version = int(item.get("version", 0)) if item is not None else 0
    modified = str(item.get("lastModified", "")) if item is not None else ""
    digest = hashlib.sha256(f"{version}|{modified}".encode()).hexdigest()
    return f'W/"{digest[:20]}"'


def is_live(item: dict[str, Any] | None, now: int | None = None) -> bool:
    """Whether a stored cart counts: DynamoDB's TTL deletes lazily, so an expired item
    reads as absent before it is deleted."""
    moment = int(time.time()) if now is None else now
    return item is not None and int(item.get("expiresAt", 0)) > moment


def _lines(item: dict[str, Any]) -> list[dict[str, Any]]:
    stored = item.get("items") or {}
    lines = list(stored.values()) if isinstance(stored, dict) else list(stored)
    return sorted(lines, key=lambda line: (str(line.get("addedAt", "")), int(line["bookId"])))


def cart_from_item(owner: cart_pb2.CartOwner, item: dict[str, Any] | None) -> cart_pb2.Cart:
    """The stored cart, or an empty one when there is none or it has expired. The totals
    are the sums of the lines."""
    if item is None or not is_live(item):
        return cart_pb2.Cart(
            owner=owner,
            total_amount=common_pb2.Money(currency_code=DEFAULT_CURRENCY),
            etag=cart_etag(None),
        )
    currency = str(item.get("currency", DEFAULT_CURRENCY))
    cart = cart_pb2.Cart(owner=owner, etag=cart_etag(item))
    total_items = 0
    total_minor = 0
    for stored in _lines(item):
        quantity = int(stored["quantity"])
        price = int(stored["priceMinor"])
        line = cart.items.add(
            book_id=int(stored["bookId"]),
            title=str(stored.get("title", "")),
            unit_price=common_pb2.Money(minor_units=price, currency_code=currency),
            quantity=quantity,
        )
        added = _timestamp(stored.get("addedAt"))
        if added is not None:
            line.add_time.CopyFrom(added)
        total_items += quantity
        total_minor += quantity * price
    cart.total_items = total_items
    cart.total_amount.CopyFrom(common_pb2.Money(minor_units=total_minor, currency_code=currency))
    updated = _timestamp(item.get("lastModified"))
    if updated is not None:
        cart.update_time.CopyFrom(updated)
    cart.expire_time.FromDatetime(datetime.fromtimestamp(int(item["expiresAt"]), UTC))
    return cart


@dataclass(frozen=True)
class BookSnapshot:
    """What a line keeps of the catalog's book when it is added."""

    book_id: int
    title: str
    price_minor: int
    currency: str
    # The catalog's stock when it was looked up.
    stock: int


@dataclass
class Change:
    """One conditional UpdateItem of the cart, and the item it leaves (for the answer of a
    write conditioned on the version it read)."""

    update: str
    condition: str
    names: dict[str, str]
    values: dict[str, Any]
    after: dict[str, Any] | None


def _book(book_id: int) -> str:
    return str(book_id)


class CartStore:
    def __init__(
        self,
        client: Any,
        table: str,
        request_ids: DynamoDBIdempotencyKeys,
        *,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.request_ids = request_ids
        self._conflicts = metrics.get_meter(__name__, meter_provider=meter_provider).create_counter(
            WRITE_CONFLICTS_METRIC,
            description="Cart writes run again because a concurrent write failed their condition",
        )

    async def _read(self, key: str) -> dict[str, Any] | None:
        answer = await self.client.get_item(
            TableName=self.table,
            Key={"userId": {"S": key}, "cartId": {"S": CURRENT_CART}},
            ConsistentRead=True,
        )
        raw = answer.get("Item")
        return None if raw is None else _from_dynamodb(raw)

    async def get(self, owner: cart_pb2.CartOwner, key: str) -> cart_pb2.Cart:
        return cart_from_item(owner, await self._read(key))

    async def add_item(
        self,
        owner: cart_pb2.CartOwner,
        key: str,
        book: BookSnapshot,
        quantity: int,
        *,
        etag: str,
        call: IdempotentCall | None,
    ) -> cart_pb2.AddItemResponse:
        def plan(item: dict[str, Any] | None, now: int, stamp: str) -> Change:
            line_id = _book(book.book_id)
            check_stock(book.book_id, quantity, book.stock)
            if not is_live(item, now):
                line = _new_line(book, quantity, stamp)
                after = _fresh(key, item, stamp, now, book.currency)
                after["items"] = {line_id: line}
                after["lineCount"] = 1
                created = Change(
                    "SET #items = :items, lineCount = :one, currency = :currency, "
                    "version = if_not_exists(version, :zero) + :one, "
                    "lastModified = :stamp, expiresAt = :expires",
                    "attribute_not_exists(userId) OR expiresAt <= :now",
                    {"#items": "items"},
                    {
                        ":items": {line_id: line},
                        ":currency": book.currency,
                        ":zero": 0,
                        ":one": 1,
                    },
                    after,
                )
                if owner.HasField("session_id"):
                    # An anonymous cart is also found by its session (the SessionIndex).
                    created.update += ", sessionId = :session"
                    created.values[":session"] = owner.session_id
                    after["sessionId"] = owner.session_id
                    # In place of a merged session's expired tombstone, if one is left.
                    created.update += f" REMOVE {MERGED_INTO}"
                return created
            assert item is not None
            if str(item.get("currency", DEFAULT_CURRENCY)) != book.currency:
                raise FailedPrecondition(
                    f"book {book.book_id} is priced in {book.currency}, the cart in "
                    f"{item.get('currency')}: one currency per cart",
                    reason="CURRENCY_MISMATCH",
                    metadata={"book_id": str(book.book_id)},
                )
            existing = (item.get("items") or {}).get(line_id)
            after = _touched(item, stamp, now)
            if existing is not None:
                held = int(existing["quantity"])
                if held + quantity > MAX_QUANTITY:
                    raise _quantity_limit(book.book_id, held)
                check_stock(book.book_id, held + quantity, book.stock)
                after["items"][line_id] = {**existing, "quantity": held + quantity}
                after["items"][line_id][STOCK_SEEN] = book.stock
                return Change(
                    "ADD #items.#book.quantity :n, version :one "
                    "SET lastModified = :stamp, expiresAt = :expires, #items.#book.#seen = :seen",
                    "expiresAt > :now AND #items.#book.quantity <= :most",
                    {"#items": "items", "#book": line_id, "#seen": STOCK_SEEN},
                    {
                        ":n": quantity,
                        ":one": 1,
                        ":most": MAX_QUANTITY - quantity,
                        ":seen": book.stock,
                    },
                    after,
                )
            count = int(item.get("lineCount", 0))
            if count >= MAX_LINES:
                raise FailedPrecondition(
                    f"a cart holds at most {MAX_LINES} distinct books",
                    reason="LINE_LIMIT",
                    metadata={"limit": str(MAX_LINES)},
                )
            line = _new_line(book, quantity, stamp)
            after["items"][line_id] = line
            after["lineCount"] = count + 1
            return Change(
                "SET #items.#book = :line, lastModified = :stamp, expiresAt = :expires "
                "ADD lineCount :one, version :one",
                "expiresAt > :now AND attribute_not_exists(#items.#book) "
                "AND (attribute_not_exists(lineCount) OR lineCount < :lines)",
                {"#items": "items", "#book": line_id},
                {":line": line, ":one": 1, ":lines": MAX_LINES},
                after,
            )

        cart = await self._write(key, plan, etag=etag, call=call, owner=owner, operation="AddItem")
        return _answer(cart_pb2.AddItemResponse, cart)

    async def set_quantity(
        self,
        owner: cart_pb2.CartOwner,
        key: str,
        book_id: int,
        quantity: int,
        *,
        stock_seen: int | None = None,
        etag: str,
        call: IdempotentCall | None,
    ) -> cart_pb2.UpdateItemQuantityResponse:
        """stock_seen: the catalog's stock when the caller checked it (None: not checked)."""

        def plan(item: dict[str, Any] | None, now: int, stamp: str) -> Change:
            line_id = _book(book_id)
            existing = _existing_line(item, now, book_id)
            assert item is not None
            after = _touched(item, stamp, now)
            if quantity == 0:
                return _removal(after, line_id)
            line = {**existing, "quantity": quantity}
            line.pop(STOCK_SEEN, None)
            # The stock seen goes with the quantity it was checked for, or not at all.
            if stock_seen is None:
                seen, seen_values = " REMOVE #items.#book.#seen", {}
            else:
                line[STOCK_SEEN] = stock_seen
                seen, seen_values = ", #items.#book.#seen = :seen", {":seen": stock_seen}
            after["items"][line_id] = line
            return Change(
                "ADD version :one SET #items.#book.quantity = :q, lastModified = :stamp, "
                f"expiresAt = :expires{seen}",
                "expiresAt > :now AND attribute_exists(#items.#book)",
                {"#items": "items", "#book": line_id, "#seen": STOCK_SEEN},
                {":q": quantity, ":one": 1, **seen_values},
                after,
            )

        cart = await self._write(
            key, plan, etag=etag, call=call, owner=owner, operation="UpdateItemQuantity"
        )
        return _answer(cart_pb2.UpdateItemQuantityResponse, cart)

    async def remove_item(
        self,
        owner: cart_pb2.CartOwner,
        key: str,
        book_id: int,
        *,
        etag: str,
        call: IdempotentCall | None,
    ) -> cart_pb2.RemoveItemResponse:
        def plan(item: dict[str, Any] | None, now: int, stamp: str) -> Change:
            _existing_line(item, now, book_id)
            assert item is not None
            return _removal(_touched(item, stamp, now), _book(book_id))

        cart = await self._write(
            key, plan, etag=etag, call=call, owner=owner, operation="RemoveItem"
        )
        return _answer(cart_pb2.RemoveItemResponse, cart)

    async def clear(
        self, owner: cart_pb2.CartOwner, key: str, *, etag: str, call: IdempotentCall | None
    ) -> cart_pb2.ClearCartResponse:
        def plan(item: dict[str, Any] | None, now: int, stamp: str) -> Change | None:
            if not is_live(item, now):
                return None  # nothing to clear
            assert item is not None
            after = _touched(item, stamp, now)
            after["items"] = {}
            after["lineCount"] = 0
            return Change(
                "SET #items = :empty, lineCount = :zero, lastModified = :stamp, "
                "expiresAt = :expires ADD version :one",
                "expiresAt > :now",
                {"#items": "items"},
                {":empty": {}, ":zero": 0, ":one": 1},
                after,
            )

        await self._write(key, plan, etag=etag, call=call, owner=owner, operation="ClearCart")
        return cart_pb2.ClearCartResponse()

    async def merge(
        self,
        owner: cart_pb2.CartOwner,
        key: str,
        session_id: str,
        binding: Callable[[int], Awaitable[dict[str, Any] | None]],
        *,
        etag: str,
        call: IdempotentCall | None,
    ) -> cart_pb2.Cart | bytes:
        """Moves the session's anonymous cart into the cart of `key`, in one
        TransactWriteItems with the session's binding (`binding(now)`: its entry, or None
        when the session is already bound to this user; it raises when the caller may not
        bind it). Quantities are summed and capped at MAX_QUANTITY; more than MAX_LINES
        lines is refused, nothing written. The anonymous cart is replaced by a tombstone in
        the same transaction, conditioned on the version read, so that a line added to it
        meanwhile is never lost (the merge runs again), and one added after it is refused
        (UNAUTHENTICATED: the caller now needs the user's token). A retry finds the
        tombstone and the session bound: nothing is written. Bytes: a retried request_id's
        stored answer."""
        session_key = session_owner_key(session_id)
        for _ in range(MAX_ATTEMPTS):
            if call is not None:
                stored = await self.request_ids.claim([], call)
                if stored is not None:
                    return stored
            now = int(time.time())
            bind = await binding(now)
            user, anonymous = await self._read(key), await self._read(session_key)
            live = user if is_live(user, now) else None
            if etag and cart_etag(live) != etag:
                raise Aborted(
                    "the cart changed since it was read (etag mismatch): read it again",
                    reason="ETAG_MISMATCH",
                )
            tombstoned = is_live(anonymous, now) and MERGED_INTO in (anonymous or {})
            moved = anonymous if is_live(anonymous, now) and not tombstoned else None
            stamp = datetime.fromtimestamp(now, UTC).isoformat()
            transaction: list[dict[str, Any]] = []
            after = user
            if moved is not None and moved.get("items"):
                change = _merge_change(live, user, moved, key, session_id, now, stamp)
                transaction.append({"Update": self._update_entry(key, change, now, stamp)})
                after = change.after
            if not tombstoned:
                transaction.append(self._tombstone(session_key, key, moved, now, stamp))
            if not any("Update" in entry for entry in transaction) and (etag or call):
                # The answer is the user's cart as read: it must still be that one.
                transaction.append(self._unchanged_check(key, live, now))
            if bind is not None:
                transaction.append(bind)
            answer = cart_from_item(owner, after)
            writes = any("ConditionCheck" not in entry for entry in transaction)
            if call is None and not writes:
                return answer  # already merged and bound: a retry changes nothing
            if call is not None:
                await self.request_ids.complete(transaction, call, answer)
            if not await self._commit(transaction, "MergeCarts"):
                continue  # a cart or the session changed, or the request_id committed
            return answer
        raise Aborted(
            "the carts kept changing under this merge: retry",
            reason="CONCURRENT_CHANGE",
        )

    def _tombstone(
        self,
        session_key: str,
        merged_into: str,
        replaced: dict[str, Any] | None,
        now: int,
        stamp: str,
    ) -> dict[str, Any]:
        """A merged session's tombstone (tables.MERGED_INTO) in place of its cart as read
        (at that version: a line added to it meanwhile is merged on the next round), or of
        its absence (none may appear once the session is bound)."""
        if replaced is not None:
            version = int(replaced.get("version", 0))
            condition, read = "version = :read", version
        else:
            version = 0
            condition, read = "attribute_not_exists(userId) OR expiresAt <= :read", now
        item = {
            "userId": session_key,
            "cartId": CURRENT_CART,
            MERGED_INTO: merged_into,
            "version": version + 1,
            "lastModified": stamp,
            "expiresAt": now + int(MERGED_TOMBSTONE_TTL.total_seconds()),
            LAST_OPERATION: "MergeCarts",
        }
        return {
            "Put": {
                "TableName": self.table,
                "Item": {name: _serializer.serialize(value) for name, value in item.items()},
                "ConditionExpression": condition,
                "ExpressionAttributeValues": {":read": _serializer.serialize(read)},
            }
        }

    async def _commit(self, transaction: list[dict[str, Any]], rpc: str) -> bool:
        """Runs a TransactWriteItems; False when one of its conditions failed (a concurrent
        write, or the same request_id committed first: the caller reads and plans again).
        ABORTED when DynamoDB cancelled it for another reason (a conflicting transaction)."""
        try:
            await self.client.transact_write_items(TransactItems=transaction)
        except ClientError as exc:
            if _code(exc) != "TransactionCanceledException":
                raise
            reasons = cancellation_reasons(exc)
            if not reasons or any(
                reason not in ("None", "ConditionalCheckFailed") for reason in reasons
            ):
                raise Aborted(
                    "a concurrent write to the cart won: read it again and retry",
                    reason="TRANSACTION_CONFLICT",
                ) from exc
            self._conflicts.add(1, {"rpc": rpc})
            return False
        return True

    def _update_entry(self, key: str, change: Change, now: int, stamp: str) -> dict[str, Any]:
        values = {
            **change.values,
            ":now": now,
            ":stamp": stamp,
            ":expires": now + int(CART_TTL.total_seconds()),
        }
        traceparent, tracestate = trace_context_values()
        values.update(
            {":traceparent": traceparent, ":tracestate": tracestate, ":operation": "MergeCarts"}
        )
        return {
            "TableName": self.table,
            "Key": {"userId": {"S": key}, "cartId": {"S": CURRENT_CART}},
            "UpdateExpression": _SET_CLAUSE.sub(_TRACED_SET, change.update, count=1),
            "ConditionExpression": change.condition,
            "ExpressionAttributeNames": change.names,
            "ExpressionAttributeValues": {k: _serializer.serialize(v) for k, v in values.items()},
        }

    def _unchanged_check(self, key: str, live: dict[str, Any] | None, now: int) -> dict[str, Any]:
        cart = {"userId": {"S": key}, "cartId": {"S": CURRENT_CART}}
        if live is None:
            return _absent_check(self.table, cart, now)
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": cart,
                "ConditionExpression": "version = :read_version",
                "ExpressionAttributeValues": {
                    ":read_version": _serializer.serialize(int(live.get("version", 0)))
                },
            }
        }

    async def _write(
        self,
        key: str,
        plan: Callable[[dict[str, Any] | None, int, str], Change | None],
        *,
        etag: str,
        call: IdempotentCall | None,
        owner: cart_pb2.CartOwner,
        operation: str,
    ) -> cart_pb2.Cart | bytes:
        """Reads the cart, plans one conditional update from it and runs it; again when a
        concurrent write made the condition fail. Bytes: the stored answer of a retried
        request_id. `operation` (the RPC) and the trace context are written with it, for
        the stream processor's events."""
        for _ in range(MAX_ATTEMPTS):
            if call is not None:
                stored = await self.request_ids.claim([], call)
                if stored is not None:
                    return stored
            item = await self._read(key)
            now = int(time.time())
            if is_live(item, now) and item is not None and MERGED_INTO in item:
                raise _signed_in_meanwhile(owner)
            live = item if is_live(item, now) else None
            if etag and cart_etag(live) != etag:
                raise Aborted(
                    "the cart changed since it was read (etag mismatch): read it again",
                    reason="ETAG_MISMATCH",
                )
            stamp = datetime.fromtimestamp(now, UTC).isoformat()
            change = plan(item, now, stamp)
            if change is None:
                return cart_from_item(owner, item)
            # Never a merged session's tombstone (tables.MERGED_INTO), whatever was read
            # (one that has expired reads as no cart, and a new cart replaces it).
            condition = (
                f"({change.condition}) AND (attribute_not_exists({MERGED_INTO}) "
                "OR expiresAt <= :now)"
            )
            traceparent, tracestate = trace_context_values()
            values = {
                **change.values,
                ":now": now,
                ":stamp": stamp,
                ":expires": now + int(CART_TTL.total_seconds()),
                ":traceparent": traceparent,
                ":tracestate": tracestate,
                ":operation": operation,
            }
            if (etag or call is not None) and live is not None:
                # The answer must be the cart this write produced from what was read.
                condition = f"({condition}) AND version = :read_version"
                values[":read_version"] = int(live.get("version", 0))
            update = {
                "TableName": self.table,
                "Key": {"userId": {"S": key}, "cartId": {"S": CURRENT_CART}},
                "UpdateExpression": _SET_CLAUSE.sub(_TRACED_SET, change.update, count=1),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": change.names,
                "ExpressionAttributeValues": {
                    k: _serializer.serialize(v) for k, v in values.items()
                },
            }
            if call is None:
                try:
                    answer = await self.client.update_item(**update, ReturnValues="ALL_NEW")
                except ClientError as exc:
                    if _code(exc) != "ConditionalCheckFailedException":
                        raise
                    self._conflicts.add(1, {"rpc": operation})
                    continue  # a concurrent write changed the line or the cart: again
                return cart_from_item(owner, _from_dynamodb(answer["Attributes"]))
            after = cart_from_item(owner, change.after)
            transaction: list[dict[str, Any]] = [{"Update": update}]
            await self.request_ids.complete(transaction, call, after)
            if not await self._commit(transaction, operation):
                continue  # the cart changed, or the same request_id committed: again
            return after
        raise Aborted(
            "the cart kept changing under this write: read it again and retry",
            reason="CONCURRENT_CHANGE",
        )


# Every write's update has one SET clause (lastModified at least); these join it.
_SET_CLAUSE = re.compile(r"\bSET\b")
_TRACED_SET = (
    f"SET {TRACEPARENT} = :traceparent, {TRACESTATE} = :tracestate, {LAST_OPERATION} = :operation,"
)


def trace_context_values() -> tuple[str, str]:
    """The current span's W3C traceparent and tracestate ("" when absent), as every cart
    write stores them."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")


def _answer(kind: type[Response], cart: cart_pb2.Cart | bytes) -> Response:
    """The response: a cart is wrapped, stored bytes (a retried request_id's first answer,
    the cart it produced) are parsed."""
    cart_message = cart_pb2.Cart.FromString(cart) if isinstance(cart, bytes) else cart
    return kind(cart=cart_message)  # type: ignore[call-arg]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _from_dynamodb(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(_deserializer.deserialize(value)) for name, value in raw.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _new_line(book: BookSnapshot, quantity: int, stamp: str) -> dict[str, Any]:
    return {
        "bookId": book.book_id,
        "title": book.title,
        "priceMinor": book.price_minor,
        "quantity": quantity,
        "addedAt": stamp,
        STOCK_SEEN: book.stock,
    }


def _fresh(
    key: str, item: dict[str, Any] | None, stamp: str, now: int, currency: str
) -> dict[str, Any]:
    return {
        "userId": key,
        "cartId": CURRENT_CART,
        "currency": currency,
        "version": int((item or {}).get("version", 0)) + 1,
        "lastModified": stamp,
        "expiresAt": now + int(CART_TTL.total_seconds()),
    }


def _touched(item: dict[str, Any], stamp: str, now: int) -> dict[str, Any]:
    after = dict(item)
    after["items"] = dict(item.get("items") or {})
    after["version"] = int(item.get("version", 0)) + 1
    after["lastModified"] = stamp
    after["expiresAt"] = now + int(CART_TTL.total_seconds())
    return after


def _existing_line(item: dict[str, Any] | None, now: int, book_id: int) -> dict[str, Any]:
    line = (item or {}).get("items", {}).get(_book(book_id)) if is_live(item, now) else None
    if line is None:
        raise NotFound(
            f"the cart has no line for book {book_id}",
            reason="CART_LINE_NOT_FOUND",
            metadata={"book_id": str(book_id)},
        )
    return dict(line)


def _removal(after: dict[str, Any], line_id: str) -> Change:
    del after["items"][line_id]
    after["lineCount"] = int(after.get("lineCount", 1)) - 1
    return Change(
        "REMOVE #items.#book SET lastModified = :stamp, expiresAt = :expires "
        "ADD version :one, lineCount :minus_one",
        "expiresAt > :now AND attribute_exists(#items.#book)",
        {"#items": "items", "#book": line_id},
        {":one": 1, ":minus_one": -1},
        after,
    )


def _signed_in_meanwhile(owner: cart_pb2.CartOwner) -> Unauthenticated:
    return Unauthenticated(
        f"session {owner.session_id} was signed in while this call ran: its cart is now "
        "the user's; send that user's token",
        reason=SESSION_SIGNED_IN,
        metadata={"session_id": owner.session_id},
    )


def _absent_check(table: str, key: dict[str, Any], now: int) -> dict[str, Any]:
    """A transaction's check that a cart does not exist (or has expired)."""
    return {
        "ConditionCheck": {
            "TableName": table,
            "Key": key,
            "ConditionExpression": "attribute_not_exists(userId) OR expiresAt <= :now",
            "ExpressionAttributeValues": {":now": _serializer.serialize(now)},
        }
    }


def _merge_change(
    live: dict[str, Any] | None,
    item: dict[str, Any] | None,
    moved: dict[str, Any],
    key: str,
    session_id: str,
    now: int,
    stamp: str,
) -> Change:
    """The update of the user's cart (`live`, None when it has none) that takes in the lines
    of the anonymous cart `moved`: summed and capped per line; the lines it does not have
    are added as they were. It SETs `lastMerge` (tables.LAST_MERGE), which the stream
    processor reads as one cart.merged."""
    merge = {"sessionId": session_id, "mergeId": str(uuid.uuid4())}
    incoming: dict[str, Any] = moved.get("items") or {}
    currency = str(moved.get("currency", DEFAULT_CURRENCY))
    if live is None:
        after = _fresh(key, item, stamp, now, currency)
        after["items"] = dict(incoming)
        after["lineCount"] = len(incoming)
        after[LAST_MERGE] = merge
        return Change(
            "SET #items = :items, lineCount = :count, currency = :currency, "
            "version = if_not_exists(version, :zero) + :one, lastModified = :stamp, "
            "expiresAt = :expires, lastMerge = :merge",
            "attribute_not_exists(userId) OR expiresAt <= :now",
            {"#items": "items"},
            {
                ":items": dict(incoming),
                ":count": len(incoming),
                ":currency": currency,
                ":zero": 0,
                ":one": 1,
                ":merge": merge,
            },
            after,
        )
    held: dict[str, Any] = live.get("items") or {}
    if held and str(live.get("currency", DEFAULT_CURRENCY)) != currency:
        raise FailedPrecondition(
            f"the session's cart is priced in {currency}, the user's in "
            f"{live.get('currency')}: one currency per cart",
            reason="CURRENCY_MISMATCH",
        )
    changed: dict[str, Any] = {}
    for line_id, line in incoming.items():
        existing = held.get(line_id)
        if existing is None:
            changed[line_id] = dict(line)
        else:
            total = int(existing["quantity"]) + int(line["quantity"])
            changed[line_id] = {**existing, "quantity": min(total, MAX_QUANTITY)}
    count = len(set(held) | set(changed))
    if count > MAX_LINES:
        raise FailedPrecondition(
            f"the merged cart would hold {count} distinct books, more than the limit of "
            f"{MAX_LINES}: remove some from either cart and retry",
            reason="LINE_LIMIT",
            metadata={"limit": str(MAX_LINES), "lines": str(count)},
        )
    after = _touched(live, stamp, now)
    after["items"].update(changed)
    after["lineCount"] = count
    after["currency"] = currency
    after[LAST_MERGE] = merge
    names = {"#items": "items"}
    values: dict[str, Any] = {
        ":count": count,
        ":currency": currency,
        ":one": 1,
        ":merge": merge,
        ":read_version": int(live.get("version", 0)),
    }
    assignments = []
    for index, (line_id, line) in enumerate(changed.items()):
        names[f"#b{index}"] = line_id
        values[f":l{index}"] = line
        assignments.append(f"#items.#b{index} = :l{index}")
    return Change(
        f"SET {', '.join(assignments)}, lineCount = :count, currency = :currency, "
        "lastModified = :stamp, expiresAt = :expires, lastMerge = :merge "
        "ADD version :one",
        "version = :read_version AND expiresAt > :now",
        names,
        values,
        after,
    )


def check_stock(book_id: int, quantity: int, stock: int) -> None:
    """A line of more than STOCK_CHECK_ABOVE copies may not hold more than is in stock."""
    if quantity > STOCK_CHECK_ABOVE and quantity > stock:
        raise FailedPrecondition(
            f"book {book_id}: {quantity} wanted, {max(stock, 0)} in stock",
            reason="INSUFFICIENT_STOCK",
            metadata={"book_id": str(book_id), "available": str(max(stock, 0))},
        )


def _quantity_limit(book_id: int, held: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"at most {MAX_QUANTITY} of one book per cart: book {book_id} has {held}",
        reason="QUANTITY_LIMIT",
        metadata={"book_id": str(book_id), "limit": str(MAX_QUANTITY), "held": str(held)},
    )
