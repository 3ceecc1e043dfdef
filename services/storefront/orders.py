"""Checkout and orders: PlaceOrder, GetOrder, ListOrders, CancelOrder (issue 18 items 2, 3).

PlaceOrder composes three services and one database, and must leave nothing half done:

1. the request_id key is taken first, in the storefront's transaction (the runtime's
   PostgresIdempotencyKeys: an uncommitted key row);
2. the caller's cart is read (cart service, the caller's token); a stale etag is ABORTED,
   an empty cart FAILED_PRECONDITION;
3. every line is priced from the catalog (one BatchGetBooks);
4. stock for all lines is reserved with one atomic AdjustInventory, as the service
   (`acting_as_service()`), with a request_id derived from the order id;
5. the order, its lines, `order.placed` in the outbox and the key's response are written
   and committed together;
6. after the commit the cart is emptied (ClearCart with the etag checked out and a derived
   request_id, the caller's token). This may fail: the order stands (see below).

Why the key's transaction stays open across the peer calls (2-4) rather than a committed
'pending' key row: with the key row uncommitted, a retry sent while the first attempt runs
waits on it in PostgreSQL and then gets the first attempt's outcome, exactly the runtime's
contract, and an attempt that fails for any reason (an error, a crash, a lost connection)
leaves no key behind without any clean-up. A committed 'pending' row would need a state
machine, a poll for the waiting retry, and a sweeper for rows whose attempt died. The cost
is a pooled connection held idle in a transaction for the peer calls (tens of
milliseconds, bounded by the caller's deadline), sized in with the pool.

The order id is derived from the caller and request_id (uuid5): a retry names the same
order, and the orders table's primary key is a second guard against a second order.

Stock reservations and releases. The reservation's AdjustInventory request_id is derived
from the order id and the order's count of releases so far (table
`storefront.reservation_releases`, 0 for a new checkout):
- a retry after an attempt that died between reserving and committing (its outcome
  unknown, e.g. a crash or a timeout of the AdjustInventory call) sends the same
  request_id again, so the catalog answers with the first reservation instead of
  reserving twice;
- an attempt that reserved and then failed for a known reason gives the stock back
  (a positive AdjustInventory with its own derived request_id) while it still holds the
  key, after recording the release (the count + 1, committed on its own): the next retry
  then reserves under a new request_id instead of being answered with the reservation
  that was given back. When the release cannot be recorded (the database is what failed)
  the stock is not given back either: the retry finds the reservation under its old
  request_id and uses it. What remains is stock held by an attempt whose client never
  retries, which is logged (ERROR, with the order id) for an operator.

The cart after the commit: ClearCart is sent with the cart's etag as checked out, so a
cart the shopper changed meanwhile is never emptied of what was added since. When it fails
(the cart service down, or that etag mismatch) the order stands and the answer says
`cart_cleared = false`; a retry of the same PlaceOrder (answered with the same order) tries
again with the same derived request_id.

CancelOrder locks the order row, gives its stock back with one AdjustInventory (request_id
derived from the order id: an order is cancelled at most once, so a retry after a failed
commit is answered by the catalog with the first release, never a second one), then marks
the order cancelled and writes `order.cancelled`, in that transaction. Cancelling an order
already cancelled answers with it unchanged (idempotent, as a state change by nature is).
A failure after the stock went back and before the commit leaves the order placed: the
error tells the client to retry, and the retry completes the cancel without a second
release.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
import grpc
from google.rpc import error_details_pb2

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.auth import acting_as_service
from cloudshelf.runtime.config import env_int
from cloudshelf.runtime.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    status_for,
)
from cloudshelf.runtime.events import OutboxRelay, new_event, write_outbox
from cloudshelf.runtime.idempotency import IdempotentCall, PostgresIdempotencyKeys
from cloudshelf.runtime.paging import Int, decode_page_token, split_page
from cloudshelf.runtime.rpc import beyond_caller_deadline
from cloudshelf.storefront.v1 import storefront_pb2
from services.storefront.outbox import OUTBOX

log = logging.getLogger(__name__)

T = TypeVar("T")

# The scope of PlaceOrder's request_id keys (plus the caller's principal).
PLACE_ORDER = "/cloudshelf.storefront.v1.StorefrontService/PlaceOrder"
IDEMPOTENCY_KEYS = "storefront.idempotency_keys"
# Namespace of the ids derived here (order ids, AdjustInventory and ClearCart request_ids).
ORDER_NAMESPACE = uuid.UUID("6f1d4c2e-3a57-5b8e-9c41-2d7e0b5a8f13")
# Seconds a stock release may take once its checkout failed, whatever the caller's deadline.
RELEASE_TIMEOUT = 10.0
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

# Reasons of our refusals (ErrorInfo.reason), documented on PlaceOrder in the proto.
CART_EMPTY = "CART_EMPTY"
BOOK_NOT_SOLD = "BOOK_NOT_SOLD"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
ETAG_MISMATCH = "ETAG_MISMATCH"
PEER_UNAVAILABLE = "PEER_UNAVAILABLE"

_STATUS_NAMES = {
    storefront_pb2.ORDER_STATUS_PLACED: "placed",
    storefront_pb2.ORDER_STATUS_CANCELLED: "cancelled",
}
_STATUS_OF_NAME = {name: status for status, name in _STATUS_NAMES.items()}

# Peer answers that mean "the peer cannot serve now" rather than something about the
# request: the caller may retry later (UNAVAILABLE), never INTERNAL.
_PEER_DOWN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)
# AdjustInventory answers after which nothing was applied; any other failure (a timeout, a
# lost connection) leaves the reservation's outcome unknown.
_NOT_APPLIED = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


# --- money ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricingRules:
    """The tax and shipping rule stated on PlaceOrder in storefront.proto."""

    # Tax rate in basis points of the discounted subtotal (800: 8 %).
    tax_rate_basis_points: int = 800
    # Shipping is free from this discounted subtotal on (minor units), else flat.
    free_shipping_from: int = 3500
    shipping_flat: int = 499

    @classmethod
    def from_env(cls) -> PricingRules:
        rules = cls(
            tax_rate_basis_points=env_int(
                "CLOUDSHELF_STOREFRONT_TAX_RATE_BASIS_POINTS", cls.tax_rate_basis_points
            ),
            free_shipping_from=env_int(
                "CLOUDSHELF_STOREFRONT_FREE_SHIPPING_FROM_MINOR_UNITS", cls.free_shipping_from
            ),
            shipping_flat=env_int(
                "CLOUDSHELF_STOREFRONT_SHIPPING_FLAT_MINOR_UNITS", cls.shipping_flat
            ),
        )
        if min(rules.tax_rate_basis_points, rules.free_shipping_from, rules.shipping_flat) < 0:
            raise ValueError(f"storefront pricing rules must not be negative: {rules}")
        return rules


@dataclass(frozen=True)
class Totals:
    subtotal: int
    discount: int
    tax: int
    shipping: int

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.tax + self.shipping


def order_totals(line_amounts: Iterable[int], rules: PricingRules) -> Totals:
    """Subtotal, discount, tax and shipping of lines (each unit price x quantity)."""
    subtotal = sum(line_amounts)
    discount = 0  # no promotions exist yet
    taxable = subtotal - discount
    # Rounded half up to a minor unit (integers only: no float ever touches money).
    tax = (taxable * rules.tax_rate_basis_points + 5_000) // 10_000
    shipping = 0 if taxable >= rules.free_shipping_from else rules.shipping_flat
    return Totals(subtotal, discount, tax, shipping)


# --- derived ids --------------------------------------------------------------------------


def order_id_for(user_id: str, request_id: uuid.UUID) -> uuid.UUID:
    """The order a PlaceOrder request_id places for a user: the same for every retry."""
    return uuid.uuid5(ORDER_NAMESPACE, f"order {user_id} {request_id}")


def reservation_request_id(order_id: uuid.UUID, releases: int) -> uuid.UUID:
    return uuid.uuid5(ORDER_NAMESPACE, f"reserve {order_id} {releases}")


def release_request_id(order_id: uuid.UUID, releases: int) -> uuid.UUID:
    return uuid.uuid5(ORDER_NAMESPACE, f"release {order_id} {releases}")


def cancel_request_id(order_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(ORDER_NAMESPACE, f"cancel {order_id}")


def clear_cart_request_id(order_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(ORDER_NAMESPACE, f"clear-cart {order_id}")


# --- peers --------------------------------------------------------------------------------


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The peer's google.rpc.ErrorInfo, when it sent one."""
    mapped = status_for(exc)
    for detail in mapped.peer_details if mapped is not None else ():
        if detail.TypeName() == error_details_pb2.ErrorInfo.DESCRIPTOR.full_name:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def peer_failure(exc: grpc.aio.AioRpcError, peer: str) -> Exception:
    """What the caller gets for a peer's failure: a peer that cannot serve is UNAVAILABLE
    (retry later); anything about the request (NOT_FOUND, DEADLINE_EXCEEDED,
    UNAUTHENTICATED, ...) is passed on with the peer's own details."""
    if exc.code() in _PEER_DOWN:
        return Unavailable(
            f"the {peer} service cannot serve now ({exc.code().name}); retry later",
            reason=PEER_UNAVAILABLE,
            metadata={"peer": peer},
        )
    return exc


async def _from_peer(call: Awaitable[T], peer: str) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise peer_failure(exc, peer) from exc


async def _despite_cancellation(work: Awaitable[None]) -> None:
    """Runs `work` to its end even when the calling task is cancelled meanwhile (the
    caller's deadline passed), then lets the cancellation through."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()


# --- rows <-> protos ----------------------------------------------------------------------

_ORDER_COLUMNS = (
    "id, seq, user_id, status, currency, subtotal_minor, discount_minor, tax_minor, "
    "shipping_minor, total_minor, total_items, payment_method, cart_etag, created_at, "
    "updated_at, cancelled_at, version"
)


def _money(minor_units: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency_code=currency)


def _order_of(row: asyncpg.Record, lines: Sequence[asyncpg.Record]) -> storefront_pb2.Order:
    currency = row["currency"]
    order = storefront_pb2.Order(
        id=str(row["id"]),
        user_id=row["user_id"],
        status=_STATUS_OF_NAME[row["status"]],
        total_items=row["total_items"],
        subtotal=_money(row["subtotal_minor"], currency),
        discount=_money(row["discount_minor"], currency),
        tax=_money(row["tax_minor"], currency),
        shipping=_money(row["shipping_minor"], currency),
        total=_money(row["total_minor"], currency),
        payment_method=storefront_pb2.PaymentMethod.Value(row["payment_method"]),
        cart_etag=row["cart_etag"],
    )
    for line in lines:
        order.lines.add(
            book_id=line["book_id"],
            title=line["title"],
            unit_price=_money(line["unit_price_minor"], currency),
            quantity=line["quantity"],
            line_total=_money(line["unit_price_minor"] * line["quantity"], currency),
            category_id=line["category_id"],
        )
    order.create_time.FromDatetime(row["created_at"])
    order.update_time.FromDatetime(row["updated_at"])
    cancelled_at: datetime | None = row["cancelled_at"]
    if cancelled_at is not None:
        order.cancel_time.FromDatetime(cancelled_at)
    return order


async def _lines_of(
    conn: asyncpg.Connection, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT order_id, book_id, title, unit_price_minor, quantity, category_id "
        "FROM storefront.order_lines WHERE order_id = ANY($1::uuid[]) "
        "ORDER BY order_id, line_no",
        list(order_ids),
    )
    lines: dict[uuid.UUID, list[asyncpg.Record]] = {order_id: [] for order_id in order_ids}
    for row in rows:
        lines[row["order_id"]].append(row)
    return lines


def check_order_id(field: str, value: str) -> uuid.UUID:
    try:
        if len(value) != 36:
            raise ValueError(value)
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "must be an order id (a UUID, 36 characters)") from None


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must be >= 0")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class PricedLine:
    book_id: int
    title: str
    unit_price: int
    quantity: int
    category_id: int


class Orders:
    """The storefront's orders: its own PostgreSQL schema plus the cart and catalog peers."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        carts: cart_pb2_grpc.CartServiceAsyncStub,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        relay: OutboxRelay | None,
        rules: PricingRules,
    ) -> None:
        self.pool = pool
        self.carts = carts
        self.catalog = catalog
        self.relay = relay
        self.rules = rules
        self.keys = PostgresIdempotencyKeys(IDEMPOTENCY_KEYS)

    def _events_written(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    # --- PlaceOrder ------------------------------------------------------------------------

    async def place(
        self, user_id: str, request: storefront_pb2.PlaceOrderRequest
    ) -> storefront_pb2.PlaceOrderResponse:
        call = IdempotentCall.of(PLACE_ORDER, request)
        if call is None:
            raise InvalidArgument(
                "request_id", "required: a UUID chosen once per checkout, repeated by retries"
            )
        if not request.cart_etag:
            raise InvalidArgument("cart_etag", "required: the etag of the cart checked out")
        if request.payment_method not in storefront_pb2.PaymentMethod.values():
            raise InvalidArgument("payment_method", "unknown payment method")
        if request.payment_method == storefront_pb2.PAYMENT_METHOD_UNSPECIFIED:
            raise InvalidArgument("payment_method", "required: how the order is paid")
        order_id = order_id_for(user_id, call.key)

        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            reservation: dict[int, int] | None = None
            releases = 0
            committing = False
            try:
                # First, before anything else: a concurrent retry waits here for our outcome.
                stored = await self.keys.claim(conn, call)
                if stored is not None:
                    await transaction.commit()
                    response = storefront_pb2.PlaceOrderResponse.FromString(stored)
                else:
                    existing = await self._order(conn, order_id, user_id)
                    if existing is not None:
                        # Placed under this request_id before its key expired (7 days).
                        response = storefront_pb2.PlaceOrderResponse(order=existing)
                    else:
                        releases = (
                            await conn.fetchval(
                                "SELECT releases FROM storefront.reservation_releases "
                                "WHERE order_id = $1",
                                order_id,
                            )
                            or 0
                        )
                        lines, currency = await self._priced_cart(request.cart_etag)
                        quantities = {line.book_id: line.quantity for line in lines}
                        reservation = await self._reserve(
                            order_id, releases, quantities, {ln.book_id: ln.title for ln in lines}
                        )
                        order = await self._insert_order(
                            conn, order_id, user_id, call.key, request, lines, currency
                        )
                        response = storefront_pb2.PlaceOrderResponse(order=order)
                    await self.keys.complete(conn, call, response)
                    # A commit that fails may still have committed: the stock then stays
                    # reserved, and a retry finds either the order or its reservation.
                    committing = True
                    await transaction.commit()
                    self._events_written()
            except BaseException:
                if reservation is not None and not committing:
                    # Still holding the key: no retry runs until the release is settled.
                    await _despite_cancellation(self._release(order_id, releases, reservation))
                try:
                    await transaction.rollback()
                except (asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, OSError):
                    pass  # a broken connection: the server ended the transaction itself
                raise
        response.cart_cleared = await self._clear_cart(order_id, response.order.cart_etag)
        return response

    async def _priced_cart(self, cart_etag: str) -> tuple[list[PricedLine], str]:
        """The caller's cart as of `cart_etag`, every line priced from the catalog, and the
        order's currency."""
        # The caller's token goes with the call: the cart is the caller's own.
        cart = (await _from_peer(self.carts.GetCart(cart_pb2.GetCartRequest()), "cart")).cart
        if cart.etag != cart_etag:
            raise Aborted(
                "cart_etag: the cart changed since it was read; show it again and check out "
                "what it holds now",
                reason=ETAG_MISMATCH,
                metadata={"etag": cart.etag},
            )
        if not cart.items:
            raise FailedPrecondition("the cart is empty: nothing to order", reason=CART_EMPTY)
        ids = [item.book_id for item in cart.items]
        answer = await _from_peer(
            self.catalog.BatchGetBooks(catalog_pb2.BatchGetBooksRequest(ids=ids)), "catalog"
        )
        books = {book.id: book for book in answer.books}
        lines = []
        currency = ""
        for item in cart.items:
            book = books.get(item.book_id)
            if book is None or book.status != catalog_pb2.BOOK_STATUS_ACTIVE:
                raise FailedPrecondition(
                    f"book {item.book_id} ({item.title!r}) is no longer sold: take it out of "
                    "the cart",
                    reason=BOOK_NOT_SOLD,
                    metadata={"book_id": str(item.book_id)},
                )
            currency = currency or book.price.currency_code
            if book.price.currency_code != currency:
                raise FailedPrecondition(
                    f"book {book.id} is priced in {book.price.currency_code}, the order in "
                    f"{currency}: one order has one currency",
                    reason="MIXED_CURRENCIES",
                    metadata={"book_id": str(book.id)},
                )
            lines.append(
                PricedLine(
                    book.id, book.title, book.price.minor_units, item.quantity, book.category_id
                )
            )
        return lines, currency

    async def _reserve(
        self,
        order_id: uuid.UUID,
        releases: int,
        quantities: dict[int, int],
        titles: dict[int, str],
    ) -> dict[int, int]:
        """Takes the stock of every line in one atomic AdjustInventory; returns what was
        taken. Raises without having taken anything, or with the outcome unknown (the
        request_id makes a retry find it)."""
        request = catalog_pb2.AdjustInventoryRequest(
            adjustments=[
                catalog_pb2.InventoryAdjustment(book_id=book_id, delta=-quantity, is_purchase=True)
                for book_id, quantity in sorted(quantities.items())
            ],
            request_id=str(reservation_request_id(order_id, releases)),
        )
        try:
            # The storefront reserves on its own authority: shoppers may not adjust stock.
            with acting_as_service():
                await self.catalog.AdjustInventory(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                info = error_info(exc)
                if info is not None and info.reason == INSUFFICIENT_STOCK:
                    book_id = int(info.metadata.get("book_id", "0"))
                    raise FailedPrecondition(
                        f"book {book_id} ({titles.get(book_id, '')!r}): not enough copies in "
                        f"stock for {quantities.get(book_id, 0)}; reduce the quantity or take "
                        "it out of the cart",
                        reason=INSUFFICIENT_STOCK,
                        metadata={"book_id": str(book_id)},
                    ) from exc
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise FailedPrecondition(
                    f"a book of the cart is no longer in the catalog: {exc.details()}",
                    reason=BOOK_NOT_SOLD,
                ) from exc
            raise peer_failure(exc, "catalog") from exc
        return quantities

    async def _release(self, order_id: uuid.UUID, releases: int, taken: dict[int, int]) -> None:
        """Gives back the stock a failed checkout reserved, after recording that it did (so
        the next attempt reserves under a new request_id). Never raises: what cannot be
        given back is logged for an operator."""
        try:
            # Bounded: every pooled connection may be held by a checkout waiting here.
            async with self.pool.acquire(timeout=RELEASE_TIMEOUT) as conn:
                await conn.execute(
                    "INSERT INTO storefront.reservation_releases (order_id, releases) "
                    "VALUES ($1, $2) ON CONFLICT (order_id) DO UPDATE "
                    "SET releases = EXCLUDED.releases, updated_at = now()",
                    order_id,
                    releases + 1,
                )
        except Exception as exc:
            log.error(
                "order %s: checkout failed and its release could not be recorded (%s): the "
                "stock stays reserved under request_id %s for a retry of the checkout",
                order_id,
                exc,
                reservation_request_id(order_id, releases),
            )
            return
        request = catalog_pb2.AdjustInventoryRequest(
            adjustments=[
                catalog_pb2.InventoryAdjustment(book_id=book_id, delta=quantity)
                for book_id, quantity in sorted(taken.items())
            ],
            request_id=str(release_request_id(order_id, releases)),
        )
        try:
            with acting_as_service(), beyond_caller_deadline():
                await self.catalog.AdjustInventory(request, timeout=RELEASE_TIMEOUT)
            log.info("order %s: checkout failed, its stock was given back", order_id)
        except Exception as exc:
            log.error(
                "order %s: checkout failed and its stock could not be given back (%s): "
                "send AdjustInventory %s again (request_id %s)",
                order_id,
                exc,
                {book_id: quantity for book_id, quantity in taken.items()},
                release_request_id(order_id, releases),
            )

    async def _insert_order(
        self,
        conn: asyncpg.Connection,
        order_id: uuid.UUID,
        user_id: str,
        request_id: uuid.UUID,
        request: storefront_pb2.PlaceOrderRequest,
        lines: Sequence[PricedLine],
        currency: str,
    ) -> storefront_pb2.Order:
        totals = order_totals((line.unit_price * line.quantity for line in lines), self.rules)
        row = await conn.fetchrow(
            "INSERT INTO storefront.orders (id, user_id, status, currency, subtotal_minor, "
            "discount_minor, tax_minor, shipping_minor, total_minor, total_items, "
            "payment_method, cart_etag, request_id) "
            "VALUES ($1, $2, 'placed', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            f"RETURNING {_ORDER_COLUMNS}",
            order_id,
            user_id,
            currency,
            totals.subtotal,
            totals.discount,
            totals.tax,
            totals.shipping,
            totals.total,
            sum(line.quantity for line in lines),
            storefront_pb2.PaymentMethod.Name(request.payment_method),
            request.cart_etag,
            request_id,
        )
        await conn.executemany(
            "INSERT INTO storefront.order_lines (order_id, line_no, book_id, title, "
            "unit_price_minor, quantity, category_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (
                    order_id,
                    number,
                    line.book_id,
                    line.title,
                    line.unit_price,
                    line.quantity,
                    line.category_id,
                )
                for number, line in enumerate(lines, start=1)
            ],
        )
        lines_rows = (await _lines_of(conn, [order_id]))[order_id]
        order = _order_of(row, lines_rows)
        event = new_event(
            "order.placed",
            str(order_id),
            row["version"],
            storefront_pb2.OrderPlacedEvent(order=order),
        )
        await write_outbox(conn, OUTBOX, [event])
        return order

    async def _clear_cart(self, order_id: uuid.UUID, cart_etag: str) -> bool:
        """Empties the cart checked out, unless it changed since; False when it could not."""
        request = cart_pb2.ClearCartRequest(
            etag=cart_etag, request_id=str(clear_cart_request_id(order_id))
        )
        try:
            await self.carts.ClearCart(request)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "order %s is placed; its cart was left as it is (%s: %s)",
                order_id,
                exc.code().name,
                exc.details(),
            )
            return False
        return True

    # --- reads ---------------------------------------------------------------------------

    async def _order(
        self, conn: asyncpg.Connection, order_id: uuid.UUID, user_id: str, *, lock: bool = False
    ) -> storefront_pb2.Order | None:
        row = await conn.fetchrow(
            f"SELECT {_ORDER_COLUMNS} FROM storefront.orders WHERE id = $1 AND user_id = $2"
            + (" FOR UPDATE" if lock else ""),
            order_id,
            user_id,
        )
        if row is None:
            return None
        return _order_of(row, (await _lines_of(conn, [order_id]))[order_id])

    async def get(self, user_id: str, order_id: uuid.UUID) -> storefront_pb2.Order:
        async with self.pool.acquire() as conn:
            order = await self._order(conn, order_id, user_id)
        if order is None:
            # Another user's order is not found either: its existence is not disclosed.
            raise NotFound(f"no order {order_id}", metadata={"order_id": str(order_id)})
        return order

    async def list(
        self, user_id: str, request: storefront_pb2.ListOrdersRequest
    ) -> storefront_pb2.ListOrdersResponse:
        size = page_size(request.page_size)
        query = {"user": user_id, "size": size}
        position = decode_page_token(request.page_token, query, {"before": Int(1, 2**63 - 1)})
        before = int(position["before"]) if position else 2**63 - 1
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_ORDER_COLUMNS} FROM storefront.orders "
                "WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                user_id,
                before,
                size + 1,
            )
            page, token = split_page(rows, size, lambda row: {"before": row["seq"]}, query)
            lines = await _lines_of(conn, [row["id"] for row in page])
        return storefront_pb2.ListOrdersResponse(
            orders=[_order_of(row, lines[row["id"]]) for row in page], next_page_token=token
        )

    # --- CancelOrder -----------------------------------------------------------------------

    async def cancel(self, user_id: str, order_id: uuid.UUID) -> storefront_pb2.Order:
        async with self.pool.acquire() as conn, conn.transaction():
            # The row lock serializes cancels of one order: one release, one event.
            order = await self._order(conn, order_id, user_id, lock=True)
            if order is None:
                raise NotFound(f"no order {order_id}", metadata={"order_id": str(order_id)})
            if order.status == storefront_pb2.ORDER_STATUS_CANCELLED:
                return order
            quantities: dict[int, int] = {}
            for line in order.lines:
                quantities[line.book_id] = quantities.get(line.book_id, 0) + line.quantity
            request = catalog_pb2.AdjustInventoryRequest(
                adjustments=[
                    catalog_pb2.InventoryAdjustment(book_id=book_id, delta=quantity)
                    for book_id, quantity in sorted(quantities.items())
                ],
                request_id=str(cancel_request_id(order_id)),
            )
            with acting_as_service():
                await _from_peer(self.catalog.AdjustInventory(request), "catalog")
            row = await conn.fetchrow(
                "UPDATE storefront.orders SET status = 'cancelled', cancelled_at = now(), "
                "updated_at = now(), version = version + 1 WHERE id = $1 "
                f"RETURNING {_ORDER_COLUMNS}",
                order_id,
            )
            cancelled = _order_of(row, (await _lines_of(conn, [order_id]))[order_id])
            event = new_event(
                "order.cancelled",
                str(order_id),
                row["version"],
                storefront_pb2.OrderCancelledEvent(order=cancelled),
            )
            await write_outbox(conn, OUTBOX, [event])
        self._events_written()
        return cancelled
