"""Checkout and orders through gRPC on the real stack (issue 18 items 2, 3): PlaceOrder
reserves stock, persists the order with its event and empties the cart, all or nothing;
retries and races place one order; owners read, page and cancel their own orders."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest_asyncio
from google.protobuf import field_mask_pb2

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.components import free_port
from cloudshelf.devstack.stack import REPO_ROOT, Stack
from cloudshelf.runtime.stores import init_postgres_connection
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from services.storefront.orders import PricingRules, order_totals
from tests.conftest import (
    ChannelTo,
    NewUser,
    ServiceSpawner,
    User,
    expect_error,
    wait_for_health,
)
from tests.error_details import details_of_error
from tests.factories import book, usd

CARD = storefront_pb2.PAYMENT_METHOD_CREDIT_CARD


@pytest_asyncio.fixture
async def storefront_db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.postgres.dsn("storefront"))
    await init_postgres_connection(conn)
    yield conn
    await conn.close()


@dataclass
class Shopper:
    user: User
    carts: cart_pb2_grpc.CartServiceAsyncStub
    storefront: storefront_pb2_grpc.StorefrontServiceAsyncStub

    async def add(self, book_id: int, quantity: int = 1) -> cart_pb2.Cart:
        request = cart_pb2.AddItemRequest(book_id=book_id, quantity=quantity)
        return (await self.carts.AddItem(request, timeout=10)).cart

    async def cart(self) -> cart_pb2.Cart:
        return (await self.carts.GetCart(cart_pb2.GetCartRequest(), timeout=10)).cart

    def place(
        self, etag: str, request_id: str | None = None, timeout: float = 15, **fields: Any
    ) -> Any:
        request = storefront_pb2.PlaceOrderRequest(
            request_id=str(uuid.uuid4()) if request_id is None else request_id,
            cart_etag=etag,
            payment_method=fields.pop("payment_method", CARD),
            **fields,
        )
        return self.storefront.PlaceOrder(request, timeout=timeout)


def _shopper(channel_to: ChannelTo, user: User) -> Shopper:
    return Shopper(
        user,
        cart_pb2_grpc.CartServiceStub(channel_to("cart", user.token)),  # type: ignore[arg-type]
        storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", user.token)),  # type: ignore[arg-type]
    )


async def _book(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, price: int = 1999, stock: int = 10
) -> catalog_pb2.Book:
    created = (
        await catalog.CreateBook(
            catalog_pb2.CreateBookRequest(book=book(price=usd(price))), timeout=10
        )
    ).book
    delta = stock - created.stock_quantity
    if delta:
        adjustment = catalog_pb2.InventoryAdjustment(book_id=created.id, delta=delta)
        await catalog.AdjustInventory(
            catalog_pb2.AdjustInventoryRequest(adjustments=[adjustment]), timeout=10
        )
    return created


async def _stock(catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, *ids: int) -> list[int]:
    answer = await catalog.BatchGetBooks(catalog_pb2.BatchGetBooksRequest(ids=ids), timeout=10)
    by_id = {b.id: b.stock_quantity for b in answer.books}
    return [by_id[i] for i in ids]


async def _orders_of(db: asyncpg.Connection, user: User) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT id, status, total_minor FROM storefront.orders WHERE user_id = $1", user.subject
    )
    return rows


async def _events(db: asyncpg.Connection, order_id: str, event_type: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT payload FROM storefront.outbox WHERE aggregate_id = $1 AND event_type = $2",
        order_id,
        event_type,
    )
    return [dict(row["payload"]) for row in rows]


def _reason(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    info = details_of_error(exc).error_info
    assert info is not None
    return info.reason, dict(info.metadata)


async def test_place_order_reserves_stock_records_the_order_and_empties_the_cart(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    shopper = _shopper(channel_to, new_user())
    first, second = await _book(catalog, 1250, stock=5), await _book(catalog, 799, stock=7)
    await shopper.add(first.id, 2)
    cart = await shopper.add(second.id, 3)
    # The catalog's price at checkout is charged, not the cart's snapshot.
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=catalog_pb2.Book(id=second.id, price=usd(899)),
            update_mask=field_mask_pb2.FieldMask(paths=["price"]),
        ),
        timeout=10,
    )

    placed = await shopper.place(cart.etag, payment_method=storefront_pb2.PAYMENT_METHOD_PAYPAL)
    order = placed.order
    assert placed.cart_cleared
    assert order.status == storefront_pb2.ORDER_STATUS_PLACED
    assert order.user_id == shopper.user.subject
    lines = {line.book_id: line for line in order.lines}
    assert lines[first.id].unit_price == usd(1250) and lines[first.id].quantity == 2
    assert lines[second.id].unit_price == usd(899) and lines[second.id].quantity == 3
    assert lines[second.id].line_total == usd(3 * 899)
    assert lines[first.id].title == first.title
    subtotal = 2 * 1250 + 3 * 899
    rules = PricingRules()
    totals = order_totals([subtotal], rules)
    assert order.subtotal == usd(subtotal) and order.discount == usd(0)
    assert order.tax == usd((subtotal * rules.tax_rate_basis_points + 5000) // 10000)
    assert order.shipping == usd(0)  # above the free-shipping threshold
    assert order.total == usd(totals.total) == usd(subtotal + order.tax.minor_units)
    assert order.total_items == 5 and order.cart_etag == cart.etag
    assert order.payment_method == storefront_pb2.PAYMENT_METHOD_PAYPAL

    assert await _stock(catalog, first.id, second.id) == [3, 4]
    assert not (await shopper.cart()).items
    rows = await _orders_of(storefront_db, shopper.user)
    assert [(str(r["id"]), r["status"], r["total_minor"]) for r in rows] == [
        (order.id, "placed", order.total.minor_units)
    ]
    [event] = await _events(storefront_db, order.id, "order.placed")
    event_lines = {int(line["book_id"]): line for line in event["order"]["lines"]}
    assert event_lines[second.id]["unit_price"] == {"minor_units": "899", "currency_code": "USD"}
    assert event_lines[first.id]["quantity"] == 2
    assert int(event_lines[first.id]["category_id"]) == first.category_id
    assert event["order"]["user_id"] == shopper.user.subject

    got = await shopper.storefront.GetOrder(
        storefront_pb2.GetOrderRequest(order_id=order.id), timeout=10
    )
    assert got.order == order
    # The storefront's relay sends it to the bus.
    published = None
    for _ in range(100):
        published = await storefront_db.fetchval(
            "SELECT published_at FROM storefront.outbox WHERE aggregate_id = $1", order.id
        )
        if published is not None:
            break
        await asyncio.sleep(0.1)
    assert published is not None


async def test_a_small_order_pays_flat_shipping(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    shopper = _shopper(channel_to, new_user())
    cheap = await _book(catalog, 500)
    cart = await shopper.add(cheap.id)
    order = (await shopper.place(cart.etag)).order
    rules = PricingRules()
    assert order.shipping == usd(rules.shipping_flat)
    assert order.total == usd(500 + order.tax.minor_units + rules.shipping_flat)


async def test_out_of_stock_names_the_book_and_changes_nothing(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    shopper = _shopper(channel_to, new_user())
    plenty, scarce = await _book(catalog, stock=10), await _book(catalog, stock=1)
    await shopper.add(plenty.id, 2)
    cart = await shopper.add(scarce.id, 2)
    try:
        await shopper.place(cart.etag)
        raise AssertionError("placed an order beyond the stock")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert str(scarce.id) in (exc.details() or "")
        assert _reason(exc) == ("INSUFFICIENT_STOCK", {"book_id": str(scarce.id)})
    # Nothing reserved (not even the line that had stock), no order, the cart as it was.
    assert await _stock(catalog, plenty.id, scarce.id) == [10, 1]
    assert await _orders_of(storefront_db, shopper.user) == []
    assert (await shopper.cart()) == cart


async def test_refusals_before_anything_is_reserved(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    shopper = _shopper(channel_to, new_user())
    empty = await shopper.cart()
    try:
        await shopper.place(empty.etag)
        raise AssertionError("ordered an empty cart")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(exc)[0] == "CART_EMPTY"

    item = await _book(catalog, stock=3)
    seen = await shopper.add(item.id)
    now = await shopper.add(item.id)  # the shopper changed the cart after seeing it
    try:
        await shopper.place(seen.etag)
        raise AssertionError("ordered a cart the shopper did not see")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.ABORTED
        assert _reason(exc)[0] == "ETAG_MISMATCH"
    await expect_error(
        shopper.place(now.etag, request_id=""), grpc.StatusCode.INVALID_ARGUMENT, "request_id"
    )
    await expect_error(
        shopper.place(now.etag, request_id="not-a-uuid"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    )
    await expect_error(shopper.place(""), grpc.StatusCode.INVALID_ARGUMENT, "cart_etag")
    await expect_error(
        shopper.place(now.etag, payment_method=storefront_pb2.PAYMENT_METHOD_UNSPECIFIED),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payment_method",
    )
    assert await _stock(catalog, item.id) == [3]
    assert await _orders_of(storefront_db, shopper.user) == []
    assert (await shopper.cart()) == now

    # Anonymous callers cannot check out.
    anonymous = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", None))
    await expect_error(
        anonymous.PlaceOrder(
            storefront_pb2.PlaceOrderRequest(
                request_id=str(uuid.uuid4()), cart_etag=now.etag, payment_method=CARD
            ),
            timeout=10,
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_a_retried_request_id_answers_with_the_same_order(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    shopper = _shopper(channel_to, new_user())
    item = await _book(catalog, stock=10)
    cart = await shopper.add(item.id, 2)
    request_id = str(uuid.uuid4())
    first = await shopper.place(cart.etag, request_id)
    again = await shopper.place(cart.etag, request_id)
    assert again.order == first.order and again.cart_cleared
    assert await _stock(catalog, item.id) == [8]
    assert len(await _orders_of(storefront_db, shopper.user)) == 1
    # The same request_id for another request is refused, never answered with the order.
    try:
        await shopper.place(
            cart.etag, request_id, payment_method=storefront_pb2.PAYMENT_METHOD_GIFT_CARD
        )
        raise AssertionError("a reused request_id placed or answered an order")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(exc)[0] == "REQUEST_ID_REUSED"

    # Sent twice at once: one order, stock taken once.
    cart = await shopper.add(item.id, 3)
    request_id = str(uuid.uuid4())
    answers = await asyncio.gather(
        shopper.place(cart.etag, request_id), shopper.place(cart.etag, request_id)
    )
    assert answers[0].order == answers[1].order
    assert await _stock(catalog, item.id) == [5]
    assert len(await _orders_of(storefront_db, shopper.user)) == 2


async def test_two_shoppers_racing_for_the_last_copy_place_one_order(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    last = await _book(catalog, stock=1)
    shoppers = [_shopper(channel_to, new_user()) for _ in range(2)]
    carts = [await each.add(last.id) for each in shoppers]
    results = await asyncio.gather(
        *(each.place(cart.etag) for each, cart in zip(shoppers, carts, strict=True)),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, storefront_pb2.PlaceOrderResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(lost[0]) == ("INSUFFICIENT_STOCK", {"book_id": str(last.id)})
    assert await _stock(catalog, last.id) == [0]
    orders = [len(await _orders_of(storefront_db, each.user)) for each in shoppers]
    assert sorted(orders) == [0, 1]
    loser = shoppers[orders.index(0)]
    assert [line.book_id for line in (await loser.cart()).items] == [last.id]


async def test_a_checkout_that_fails_after_reserving_gives_the_stock_back(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
    stack: Stack,
) -> None:
    shopper = _shopper(channel_to, new_user())
    item = await _book(catalog, stock=4)
    cart = await shopper.add(item.id, 3)
    request_id = str(uuid.uuid4())
    # Order lines cannot be written while this lock is held: the checkout reserves stock,
    # then runs out of its deadline persisting the order.
    blocker = await asyncpg.connect(stack.postgres.dsn("storefront"))
    try:
        locked = blocker.transaction()
        await locked.start()
        await blocker.execute("LOCK TABLE storefront.order_lines IN EXCLUSIVE MODE")
        await expect_error(
            shopper.place(cart.etag, request_id, timeout=3), grpc.StatusCode.DEADLINE_EXCEEDED
        )
        # The stock comes back (the release runs after the caller's deadline).
        for _ in range(100):
            if await _stock(catalog, item.id) == [4]:
                break
            await asyncio.sleep(0.1)
        assert await _stock(catalog, item.id) == [4]
        await locked.rollback()
    finally:
        await blocker.close()
    assert await _orders_of(storefront_db, shopper.user) == []
    assert (await shopper.cart()) == cart

    # A retry of the same request reserves again (not answered with the given-back
    # reservation) and places the order once.
    placed = await shopper.place(cart.etag, request_id)
    assert placed.order.total_items == 3
    assert await _stock(catalog, item.id) == [1]
    assert len(await _orders_of(storefront_db, shopper.user)) == 1


async def test_orders_are_their_owners_only(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    owner, other = _shopper(channel_to, new_user()), _shopper(channel_to, new_user())
    item = await _book(catalog, stock=5)
    order = (await owner.place((await owner.add(item.id)).etag)).order
    await expect_error(
        other.storefront.GetOrder(storefront_pb2.GetOrderRequest(order_id=order.id), timeout=10),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        other.storefront.CancelOrder(
            storefront_pb2.CancelOrderRequest(order_id=order.id), timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await other.storefront.ListOrders(storefront_pb2.ListOrdersRequest(), timeout=10)
    assert list(listed.orders) == []
    await expect_error(
        owner.storefront.GetOrder(storefront_pb2.GetOrderRequest(order_id="x"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "order_id",
    )
    await expect_error(
        owner.storefront.GetOrder(
            storefront_pb2.GetOrderRequest(order_id=str(uuid.uuid4())), timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await _stock(catalog, item.id) == [4]


async def test_list_orders_pages_newest_first(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    shopper = _shopper(channel_to, new_user())
    item = await _book(catalog, stock=10)
    placed = []
    for quantity in (1, 2, 3):
        placed.append((await shopper.place((await shopper.add(item.id, quantity)).etag)).order)
    first = await shopper.storefront.ListOrders(
        storefront_pb2.ListOrdersRequest(page_size=2), timeout=10
    )
    assert [o.id for o in first.orders] == [placed[2].id, placed[1].id]
    assert first.orders[0] == placed[2]
    assert first.next_page_token
    second = await shopper.storefront.ListOrders(
        storefront_pb2.ListOrdersRequest(page_size=2, page_token=first.next_page_token),
        timeout=10,
    )
    assert [o.id for o in second.orders] == [placed[0].id] and not second.next_page_token
    await expect_error(
        shopper.storefront.ListOrders(
            storefront_pb2.ListOrdersRequest(page_size=3, page_token=first.next_page_token),
            timeout=10,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )
    await expect_error(
        shopper.storefront.ListOrders(storefront_pb2.ListOrdersRequest(page_size=-1), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )


async def test_cancel_gives_the_stock_back_once_and_publishes_order_cancelled(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    shopper = _shopper(channel_to, new_user())
    first, second = await _book(catalog, stock=6), await _book(catalog, stock=6)
    await shopper.add(first.id, 2)
    order = (await shopper.place((await shopper.add(second.id, 4)).etag)).order
    assert await _stock(catalog, first.id, second.id) == [4, 2]

    cancel = storefront_pb2.CancelOrderRequest(order_id=order.id)
    cancelled = (await shopper.storefront.CancelOrder(cancel, timeout=10)).order
    assert cancelled.status == storefront_pb2.ORDER_STATUS_CANCELLED
    assert cancelled.HasField("cancel_time") and list(cancelled.lines) == list(order.lines)
    assert await _stock(catalog, first.id, second.id) == [6, 6]
    # Again, and twice at once: the order as it is, no second release, no second event.
    again = await asyncio.gather(
        shopper.storefront.CancelOrder(cancel, timeout=10),
        shopper.storefront.CancelOrder(cancel, timeout=10),
    )
    assert all(answer.order == cancelled for answer in again)
    assert await _stock(catalog, first.id, second.id) == [6, 6]
    [event] = await _events(storefront_db, order.id, "order.cancelled")
    assert event["order"]["status"] == "ORDER_STATUS_CANCELLED"
    assert {int(line["book_id"]) for line in event["order"]["lines"]} == {first.id, second.id}
    got = await shopper.storefront.GetOrder(
        storefront_pb2.GetOrderRequest(order_id=order.id), timeout=10
    )
    assert got.order == cancelled


async def test_the_order_stands_when_the_cart_changed_during_checkout(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
    stack: Stack,
) -> None:
    shopper = _shopper(channel_to, new_user())
    bought, added_later = await _book(catalog, stock=5), await _book(catalog, stock=5)
    cart = await shopper.add(bought.id, 2)
    blocker = await asyncpg.connect(stack.postgres.dsn("storefront"))
    try:
        locked = blocker.transaction()
        await locked.start()
        # Holds the checkout between reserving and writing its lines ...
        await blocker.execute("LOCK TABLE storefront.order_lines IN EXCLUSIVE MODE")
        checkout = asyncio.ensure_future(shopper.place(cart.etag, timeout=20))
        await asyncio.sleep(1.0)
        assert not checkout.done()
        # ... while the shopper adds a book in another tab.
        changed = await shopper.add(added_later.id)
        await locked.rollback()
        placed = await checkout
    finally:
        await blocker.close()
    # The order is placed for the cart as checked out; the cart is not emptied of the book
    # added since (ClearCart with the old etag is refused).
    assert not placed.cart_cleared
    assert [(line.book_id, line.quantity) for line in placed.order.lines] == [(bought.id, 2)]
    assert len(await _orders_of(storefront_db, shopper.user)) == 1
    assert await _stock(catalog, bought.id, added_later.id) == [3, 5]
    assert (await shopper.cart()) == changed


async def test_a_catalog_outage_is_unavailable_and_changes_nothing(
    spawn_service: ServiceSpawner,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    user = new_user()
    shopper = _shopper(channel_to, user)
    item = await _book(catalog, stock=5)
    cart = await shopper.add(item.id)
    # Nothing listens at the catalog address this storefront is given.
    _, address = spawn_service("storefront", CLOUDSHELF_CATALOG_ADDR=f"127.0.0.1:{free_port()}")
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    storefront = storefront_pb2_grpc.StorefrontServiceStub(
        spawn_service.channel(address, user.token)
    )
    request = storefront_pb2.PlaceOrderRequest(
        request_id=str(uuid.uuid4()), cart_etag=cart.etag, payment_method=CARD
    )
    try:
        await storefront.PlaceOrder(request, timeout=10)
        raise AssertionError("placed an order without a catalog")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
        assert _reason(exc) == ("PEER_UNAVAILABLE", {"peer": "catalog"})
    assert await _stock(catalog, item.id) == [5]
    assert await _orders_of(storefront_db, user) == []
    assert (await shopper.cart()) == cart


async def test_the_callers_deadline_reaches_the_catalog(
    spawn_service: ServiceSpawner,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    user = new_user()
    shopper = _shopper(channel_to, user)
    item = await _book(catalog, stock=5)
    cart = await shopper.add(item.id)
    frozen, catalog_address = spawn_service("catalog")
    await asyncio.to_thread(wait_for_health, catalog_address, "SERVING")
    _, address = spawn_service("storefront", CLOUDSHELF_CATALOG_ADDR=catalog_address)
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    storefront = storefront_pb2_grpc.StorefrontServiceStub(
        spawn_service.channel(address, user.token)
    )
    request = storefront_pb2.PlaceOrderRequest(
        request_id=str(uuid.uuid4()), cart_etag=cart.etag, payment_method=CARD
    )
    frozen.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        await expect_error(
            storefront.PlaceOrder(request, timeout=2), grpc.StatusCode.DEADLINE_EXCEEDED
        )
        # Answered at the caller's deadline, not the storefront's default (5 s) or later.
        assert time.monotonic() - started < 3.5
    finally:
        frozen.signal(signal.SIGCONT)
    assert await _stock(catalog, item.id) == [5]
    assert await _orders_of(storefront_db, user) == []
    assert (await shopper.cart()) == cart


async def _verified(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, book_id: int, user: User
) -> bool:
    answer = await catalog.ListReviews(catalog_pb2.ListReviewsRequest(book_id=book_id), timeout=10)
    [review] = [r for r in answer.reviews if r.user_id == user.subject]
    return review.is_verified_purchase


async def _until_verified(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, book_id: int, user: User, expected: bool
) -> None:
    for _ in range(150):
        if await _verified(catalog, book_id, user) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"review of book {book_id} never became verified={expected}")


async def test_a_review_is_a_verified_purchase_while_its_author_holds_an_order(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    buyer, browser = new_user(), new_user()
    shopper = _shopper(channel_to, buyer)
    reviewed_first, reviewed_later = await _book(catalog), await _book(catalog)

    def reviews_as(user: User) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
        return catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog", user.token))  # type: ignore[return-value]

    def review(book_id: int) -> catalog_pb2.AddReviewRequest:
        return catalog_pb2.AddReviewRequest(
            review=catalog_pb2.Review(book_id=book_id, rating=5, title="Good", content="Read it")
        )

    added = (await reviews_as(buyer).AddReview(review(reviewed_first.id), timeout=10)).review
    assert not added.is_verified_purchase
    await reviews_as(browser).AddReview(review(reviewed_first.id), timeout=10)

    await shopper.add(reviewed_first.id)
    order = (await shopper.place((await shopper.add(reviewed_later.id)).etag)).order
    # order.placed travels storefront outbox -> bus -> the catalog's queue -> the catalog.
    await _until_verified(catalog, reviewed_first.id, buyer, True)
    assert not await _verified(catalog, reviewed_first.id, browser)
    # A review written after the catalog learnt of the order is verified at once.
    later = (await reviews_as(buyer).AddReview(review(reviewed_later.id), timeout=10)).review
    assert later.is_verified_purchase

    await shopper.storefront.CancelOrder(
        storefront_pb2.CancelOrderRequest(order_id=order.id), timeout=10
    )
    await _until_verified(catalog, reviewed_first.id, buyer, False)
    await _until_verified(catalog, reviewed_later.id, buyer, False)


async def test_the_prune_job_removes_only_expired_checkout_keys(
    stack: Stack,
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    storefront_db: asyncpg.Connection,
) -> None:
    shopper = _shopper(channel_to, new_user())
    item = await _book(catalog, stock=10)
    keys = []
    for _ in range(2):
        cart = await shopper.add(item.id, 1)
        keys.append(str(uuid.uuid4()))
        await shopper.place(cart.etag, keys[-1])
    expired, live = keys
    await storefront_db.execute(
        "UPDATE storefront.idempotency_keys SET expires_at = now() - interval '1 second' "
        "WHERE key = $1::uuid",
        expired,
    )
    # As the storefront's CronJob runs it: in the storefront's environment.
    flags = ("--service", "storefront")
    job = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cloudshelf.cli", "job", "prune-idempotency-keys", *flags],
        env=stack.service_env("storefront"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert job.returncode == 0, job.stderr
    assert int(job.stdout.split("pruned:")[1].split()[0]) >= 1
    left = await storefront_db.fetch(
        "SELECT key::text FROM storefront.idempotency_keys WHERE key = ANY($1::uuid[])", keys
    )
    assert {row["key"] for row in left} == {live}
