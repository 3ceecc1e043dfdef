"""A signed-in shopper's cart through gRPC (issue 17, items 1, 3, 4, 5): prices from the
catalog, no lost updates, etags, request ids, limits."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from google.protobuf import field_mask_pb2

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import ChannelTo, NewUser, expect_error
from tests.error_details import details_of_error
from tests.factories import book, usd


async def _book(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    price: int = 1999,
    status: catalog_pb2.BookStatus.ValueType = catalog_pb2.BOOK_STATUS_ACTIVE,
    stock: int = 0,
) -> catalog_pb2.Book:
    """A new catalog book; `stock` copies in stock (lines above 5 are checked against it)."""
    request = catalog_pb2.CreateBookRequest(book=book(price=usd(price), status=status))
    created = (await catalog.CreateBook(request, timeout=10)).book
    delta = stock - created.stock_quantity
    if delta:
        adjustment = catalog_pb2.InventoryAdjustment(book_id=created.id, delta=delta)
        await catalog.AdjustInventory(
            catalog_pb2.AdjustInventoryRequest(adjustments=[adjustment]), timeout=10
        )
    return created


def _carts(channel_to: ChannelTo, token: str) -> cart_pb2_grpc.CartServiceAsyncStub:
    return cart_pb2_grpc.CartServiceStub(channel_to("cart", token))  # type: ignore[return-value]


def _add(book_id: int, quantity: int = 1, **fields: str) -> cart_pb2.AddItemRequest:
    return cart_pb2.AddItemRequest(book_id=book_id, quantity=quantity, **fields)


async def _reason(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        info = details_of_error(exc).error_info
        assert info is not None
        return f"{exc.code().name} {info.reason}"
    raise AssertionError("the call succeeded")


def _assert_totals(cart: cart_pb2.Cart) -> None:
    assert cart.total_items == sum(line.quantity for line in cart.items)
    assert cart.total_amount.minor_units == sum(
        line.quantity * line.unit_price.minor_units for line in cart.items
    )


async def test_add_item_snapshots_the_catalogs_title_and_price(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    carts = _carts(channel_to, new_user().token)
    first, second = await _book(catalog, 1250), await _book(catalog, 799)
    await carts.AddItem(_add(first.id, 2), timeout=10)
    cart = (await carts.AddItem(_add(second.id, 3), timeout=10)).cart
    lines = {line.book_id: line for line in cart.items}
    assert lines[first.id].title == first.title
    assert lines[first.id].unit_price == usd(1250) and lines[first.id].quantity == 2
    assert lines[second.id].unit_price == usd(799) and lines[second.id].quantity == 3
    assert cart.total_items == 5 and cart.total_amount == usd(2 * 1250 + 3 * 799)
    _assert_totals(cart)
    assert (await carts.GetCart(cart_pb2.GetCartRequest(), timeout=5)).cart == cart
    # The request has no title or price to send: the old `item` field is reserved.
    assert "item" not in cart_pb2.AddItemRequest.DESCRIPTOR.fields_by_name

    # A later price change in the catalog leaves the snapshot as it was added.
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=catalog_pb2.Book(id=first.id, price=usd(9999)),
            update_mask=field_mask_pb2.FieldMask(paths=["price"]),
        ),
        timeout=10,
    )
    again = (await carts.AddItem(_add(first.id, 1), timeout=10)).cart
    line = next(line for line in again.items if line.book_id == first.id)
    assert line.unit_price == usd(1250) and line.quantity == 3
    _assert_totals(again)


async def test_another_user_never_sees_my_cart(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    mine, theirs = new_user(), new_user()
    listed = await _book(catalog)
    await _carts(channel_to, mine.token).AddItem(_add(listed.id, 4), timeout=10)
    other = (await _carts(channel_to, theirs.token).GetCart(cart_pb2.GetCartRequest())).cart
    assert list(other.items) == [] and other.owner.user_id == theirs.subject
    await expect_error(
        _carts(channel_to, theirs.token).RemoveItem(cart_pb2.RemoveItemRequest(book_id=listed.id)),
        grpc.StatusCode.NOT_FOUND,
    )
    # Anonymous callers have no cart yet (sessions come later).
    await expect_error(
        cart_pb2_grpc.CartServiceStub(channel_to("cart", None)).GetCart(cart_pb2.GetCartRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_unknown_and_inactive_books_are_refused(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    carts = _carts(channel_to, new_user().token)
    assert await _reason(carts.AddItem(_add(9_000_000_000_001))) == "NOT_FOUND BOOK_NOT_FOUND"
    hidden = await _book(catalog, status=catalog_pb2.BOOK_STATUS_INACTIVE)
    assert await _reason(carts.AddItem(_add(hidden.id))) == "FAILED_PRECONDITION BOOK_NOT_ACTIVE"
    assert list((await carts.GetCart(cart_pb2.GetCartRequest())).cart.items) == []


async def test_64_concurrent_adds_of_one_book_are_all_counted(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    shopper = new_user()
    carts = _carts(channel_to, shopper.token)
    listed, other = await _book(catalog, 500, stock=100), await _book(catalog, 300, stock=100)
    await asyncio.gather(
        *(carts.AddItem(_add(listed.id, 1), timeout=30) for _ in range(64)),
        # Distinct request ids too: each is one add, conditioned on the version it read.
        *(
            carts.AddItem(_add(other.id, 1, request_id=str(uuid.uuid4())), timeout=30)
            for _ in range(8)
        ),
    )
    cart = (await carts.GetCart(cart_pb2.GetCartRequest())).cart
    quantities = {line.book_id: line.quantity for line in cart.items}
    assert quantities == {listed.id: 64, other.id: 8}
    _assert_totals(cart)


async def test_a_stale_etag_is_aborted_and_a_current_one_writes(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    carts = _carts(channel_to, new_user().token)
    listed = await _book(catalog, stock=10)
    empty = (await carts.GetCart(cart_pb2.GetCartRequest())).cart.etag
    first = (await carts.AddItem(_add(listed.id, 1, etag=empty), timeout=10)).cart
    # The empty cart's etag no longer holds once the cart exists.
    assert await _reason(carts.AddItem(_add(listed.id, 1, etag=empty))) == "ABORTED ETAG_MISMATCH"
    for stale in (
        carts.UpdateItemQuantity(
            cart_pb2.UpdateItemQuantityRequest(book_id=listed.id, quantity=5, etag=empty)
        ),
        carts.RemoveItem(cart_pb2.RemoveItemRequest(book_id=listed.id, etag=empty)),
        carts.ClearCart(cart_pb2.ClearCartRequest(etag=empty)),
    ):
        assert await _reason(stale) == "ABORTED ETAG_MISMATCH"
    updated = (
        await carts.UpdateItemQuantity(
            cart_pb2.UpdateItemQuantityRequest(book_id=listed.id, quantity=7, etag=first.etag)
        )
    ).cart
    assert updated.items[0].quantity == 7 and updated.etag != first.etag
    _assert_totals(updated)


async def test_a_retried_request_id_is_applied_once_and_a_reused_one_refused(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    shopper = new_user()
    carts = _carts(channel_to, shopper.token)
    listed = await _book(catalog)
    key = str(uuid.uuid4())
    first = await carts.AddItem(_add(listed.id, 2, request_id=key), timeout=10)
    retried = await asyncio.gather(
        *(carts.AddItem(_add(listed.id, 2, request_id=key), timeout=10) for _ in range(4))
    )
    assert all(answer == first for answer in retried)
    cart = (await carts.GetCart(cart_pb2.GetCartRequest())).cart
    assert cart.items[0].quantity == 2
    assert (
        await _reason(carts.AddItem(_add(listed.id, 3, request_id=key)))
        == "FAILED_PRECONDITION REQUEST_ID_REUSED"
    )
    # The same key from another caller is another key.
    other = _carts(channel_to, new_user().token)
    assert (await other.AddItem(_add(listed.id, 3, request_id=key))).cart.items[0].quantity == 3
    # A retried removal answers as the first time, though the line is gone.
    removal = cart_pb2.RemoveItemRequest(book_id=listed.id, request_id=str(uuid.uuid4()))
    removed = await carts.RemoveItem(removal)
    assert await carts.RemoveItem(removal) == removed and list(removed.cart.items) == []
    await expect_error(
        carts.AddItem(_add(listed.id, 1, request_id="not-a-uuid")), grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_limits_are_named_and_never_half_written(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    carts = _carts(channel_to, new_user().token)
    listed = await _book(catalog, stock=500)
    for quantity in (0, -1, 101):
        assert (
            await _reason(carts.AddItem(_add(listed.id, quantity)))
            == "INVALID_ARGUMENT QUANTITY_LIMIT"
        )
    await carts.AddItem(_add(listed.id, 60))
    assert await _reason(carts.AddItem(_add(listed.id, 41))) == "FAILED_PRECONDITION QUANTITY_LIMIT"
    cart = (await carts.AddItem(_add(listed.id, 40))).cart
    assert cart.items[0].quantity == 100
    assert (
        await _reason(
            carts.UpdateItemQuantity(
                cart_pb2.UpdateItemQuantityRequest(book_id=listed.id, quantity=101)
            )
        )
        == "INVALID_ARGUMENT QUANTITY_LIMIT"
    )
    await expect_error(carts.AddItem(_add(0)), grpc.StatusCode.INVALID_ARGUMENT, "book_id")

    # 100 distinct books fill a cart; the 101st is refused and the cart stays as it was.
    filled = _carts(channel_to, new_user().token)
    books = [await _book(catalog, 100 + n) for n in range(101)]
    for start in range(0, 100, 20):
        await asyncio.gather(
            *(filled.AddItem(_add(b.id, 1), timeout=30) for b in books[start : start + 20])
        )
    assert await _reason(filled.AddItem(_add(books[100].id))) == "FAILED_PRECONDITION LINE_LIMIT"
    full = (await filled.GetCart(cart_pb2.GetCartRequest())).cart
    assert len(full.items) == 100 and books[100].id not in {line.book_id for line in full.items}
    _assert_totals(full)


async def test_update_remove_and_clear(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    carts = _carts(channel_to, new_user().token)
    first, second = await _book(catalog, 1000), await _book(catalog, 250)
    await carts.AddItem(_add(first.id, 1))
    await carts.AddItem(_add(second.id, 2))
    cart = (
        await carts.UpdateItemQuantity(
            cart_pb2.UpdateItemQuantityRequest(book_id=first.id, quantity=4)
        )
    ).cart
    assert cart.total_items == 6 and cart.total_amount == usd(4 * 1000 + 2 * 250)
    cart = (
        await carts.UpdateItemQuantity(
            cart_pb2.UpdateItemQuantityRequest(book_id=first.id, quantity=0)
        )
    ).cart
    assert [line.book_id for line in cart.items] == [second.id]
    _assert_totals(cart)
    await expect_error(
        carts.UpdateItemQuantity(cart_pb2.UpdateItemQuantityRequest(book_id=first.id, quantity=1)),
        grpc.StatusCode.NOT_FOUND,
    )
    cart = (await carts.RemoveItem(cart_pb2.RemoveItemRequest(book_id=second.id))).cart
    assert list(cart.items) == [] and cart.total_items == 0 and cart.total_amount == usd(0)

    await carts.AddItem(_add(first.id, 3))
    before = (await carts.GetCart(cart_pb2.GetCartRequest())).cart
    await carts.ClearCart(cart_pb2.ClearCartRequest(etag=before.etag, request_id=str(uuid.uuid4())))
    cleared = (await carts.GetCart(cart_pb2.GetCartRequest())).cart
    assert list(cleared.items) == [] and cleared.total_amount == usd(0)
    assert cleared.etag != before.etag
    # A cleared cart takes new lines.
    assert (await carts.AddItem(_add(second.id, 1))).cart.total_amount == usd(250)


async def test_large_lines_are_checked_against_live_stock(
    channel_to: ChannelTo, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, new_user: NewUser
) -> None:
    carts = _carts(channel_to, new_user().token)
    listed = await _book(catalog)

    async def stock_to(level: int) -> None:
        current = (await catalog.GetBook(catalog_pb2.GetBookRequest(id=listed.id))).book
        delta = level - current.stock_quantity
        if delta:
            adjustment = catalog_pb2.InventoryAdjustment(book_id=listed.id, delta=delta)
            await catalog.AdjustInventory(
                catalog_pb2.AdjustInventoryRequest(adjustments=[adjustment]), timeout=10
            )

    await stock_to(2)
    # Up to 5 copies are not checked (the seed's rule): the stock is checked at checkout.
    await carts.AddItem(_add(listed.id, 5))
    try:
        await carts.AddItem(_add(listed.id, 1))
    except grpc.aio.AioRpcError as exc:
        info = details_of_error(exc).error_info
        assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and info is not None
        assert info.reason == "INSUFFICIENT_STOCK"
        assert dict(info.metadata) == {"book_id": str(listed.id), "available": "2"}
    else:
        raise AssertionError("6 copies of a book with 2 in stock were added")
    await stock_to(8)
    assert (await carts.AddItem(_add(listed.id, 3))).cart.items[0].quantity == 8
    set_to_9 = cart_pb2.UpdateItemQuantityRequest(book_id=listed.id, quantity=9)
    assert (
        await _reason(carts.UpdateItemQuantity(set_to_9))
        == "FAILED_PRECONDITION INSUFFICIENT_STOCK"
    )
    await stock_to(9)
    assert (await carts.UpdateItemQuantity(set_to_9)).cart.items[0].quantity == 9
