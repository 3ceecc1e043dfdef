"""The storefront's cart view through gRPC on the real stack (issue 18, items 1 and 5):
live catalog data on every line, both totals, one BatchGetBooks per view, the cart's
snapshot within the caller's deadline when the catalog is frozen or stopped, and the
cart's failures as statuses the caller can act on."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from typing import TYPE_CHECKING

import grpc
from google.protobuf import field_mask_pb2

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.components import free_port
from cloudshelf.storefront.v1 import storefront_pb2 as sf
from cloudshelf.storefront.v1 import storefront_pb2_grpc
from services.storefront.cart_view import (
    ANSWER_RESERVE_ENV,
    CART_UNAVAILABLE,
    CATALOG_BUDGET_ENV,
)
from tests.conftest import ChannelTo, NewUser, ServiceSpawner, User, wait_for_health
from tests.error_details import details_of_error
from tests.factories import book, usd
from tests.otlp_receiver import OtlpReceiver

if TYPE_CHECKING:
    Catalog = catalog_pb2_grpc.CatalogServiceAsyncStub
    Storefront = storefront_pb2_grpc.StorefrontServiceAsyncStub
SPAN_KIND_SERVER = 2
BATCH_GET_BOOKS = "/cloudshelf.catalog.v1.CatalogService/BatchGetBooks"


async def _book(catalog: Catalog, price: int, stock: int) -> catalog_pb2.Book:
    created = (
        await catalog.CreateBook(
            catalog_pb2.CreateBookRequest(
                book=book(
                    price=usd(price),
                    status=catalog_pb2.BOOK_STATUS_ACTIVE,
                    cover_image_url=f"https://covers.example/{secrets.token_hex(4)}.jpg",
                )
            ),
            timeout=10,
        )
    ).book
    if stock:
        await catalog.AdjustInventory(
            catalog_pb2.AdjustInventoryRequest(
                adjustments=[catalog_pb2.InventoryAdjustment(book_id=created.id, delta=stock)]
            ),
            timeout=10,
        )
    return created


async def _update(catalog: Catalog, changed: catalog_pb2.Book, *paths: str) -> None:
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=changed, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
        ),
        timeout=10,
    )


async def _fill_cart(channel: grpc.aio.Channel, lines: list[tuple[int, int]]) -> cart_pb2.Cart:
    carts: cart_pb2_grpc.CartServiceAsyncStub = cart_pb2_grpc.CartServiceStub(channel)  # type: ignore[assignment]
    cart = cart_pb2.Cart()
    for book_id, quantity in lines:
        request = cart_pb2.AddItemRequest(book_id=book_id, quantity=quantity)
        cart = (await carts.AddItem(request, timeout=10)).cart
    return cart


def _storefront(channel: grpc.aio.Channel) -> Storefront:
    return storefront_pb2_grpc.StorefrontServiceStub(channel)  # type: ignore[return-value]


async def _view(storefront: Storefront, seconds: float = 10, **kwargs: object) -> sf.CartView:
    response = await storefront.GetCartView(sf.GetCartViewRequest(), timeout=seconds, **kwargs)  # type: ignore[arg-type]
    return response.cart_view


async def test_every_line_shows_todays_catalog_data_and_both_totals_from_one_batch_call(
    channel_to: ChannelTo, catalog: Catalog, new_user: NewUser, otlp: OtlpReceiver
) -> None:
    shopper = new_user()
    plenty = await _book(catalog, price=1250, stock=10)
    scarce = await _book(catalog, price=799, stock=1)
    sold_out = await _book(catalog, price=2000, stock=0)
    withdrawn = await _book(catalog, price=500, stock=4)
    lines = [(plenty.id, 2), (scarce.id, 3), (sold_out.id, 1), (withdrawn.id, 1)]
    cart = await _fill_cart(channel_to("cart", shopper.token), lines)
    stored_total = 2 * 1250 + 3 * 799 + 2000 + 500
    assert cart.total_amount == usd(stored_total)

    # Between add and view: a new price for one book, another taken off sale (as admin).
    await _update(catalog, catalog_pb2.Book(id=plenty.id, price=usd(1400)), "price")
    await _update(
        catalog,
        catalog_pb2.Book(id=withdrawn.id, status=catalog_pb2.BOOK_STATUS_DISCONTINUED),
        "status",
    )

    trace_id = secrets.token_hex(16)
    traceparent = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
    view = await _view(_storefront(channel_to("storefront", shopper.token)), metadata=traceparent)

    assert not view.catalog_unavailable
    assert view.owner.user_id == shopper.subject and view.cart_etag == cart.etag
    by_book = {line.item.book_id: line for line in view.items}
    assert [line.item.book_id for line in view.items] == [b for b, _ in lines]
    expected = {
        plenty.id: (1400, True, 10, sf.AVAILABILITY_AVAILABLE, plenty),
        scarce.id: (799, False, 1, sf.AVAILABILITY_INSUFFICIENT_STOCK, scarce),
        sold_out.id: (2000, False, 0, sf.AVAILABILITY_OUT_OF_STOCK, sold_out),
        withdrawn.id: (500, False, 4, sf.AVAILABILITY_NOT_FOR_SALE, withdrawn),
    }
    for book_id, (price, changed, stock, availability, created) in expected.items():
        line = by_book[book_id]
        assert line.current_price == usd(price), book_id
        assert line.price_changed is changed, book_id
        assert line.stock_quantity == stock, book_id
        assert line.availability == availability, book_id
        assert line.cover_image_url == created.cover_image_url and line.cover_image_url
    # The stored line keeps the price it was added at.
    assert by_book[plenty.id].item.unit_price == usd(1250)
    assert view.total_items == 7
    assert view.total_amount == usd(stored_total)
    assert view.total_current_amount == usd(stored_total + 2 * (1400 - 1250))

    # Four lines, one catalog call (the catalog's own server spans of this trace).
    otlp.wait_for(trace_id, {"storefront", "cart", "catalog"})
    await asyncio.sleep(1.0)  # spans of any further call would have been exported by now
    catalog_calls = [
        s.name
        for s in otlp.spans_of_trace(trace_id)
        if s.service_name == "catalog" and s.kind == SPAN_KIND_SERVER
    ]
    assert catalog_calls == [BATCH_GET_BOOKS]


async def test_an_empty_cart_is_an_empty_view_without_asking_the_catalog(
    channel_to: ChannelTo, new_user: NewUser, otlp: OtlpReceiver
) -> None:
    shopper = new_user()
    trace_id = secrets.token_hex(16)
    traceparent = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
    view = await _view(_storefront(channel_to("storefront", shopper.token)), metadata=traceparent)
    assert list(view.items) == [] and view.total_items == 0
    assert view.total_amount == usd(0) and view.total_current_amount == usd(0)
    assert not view.catalog_unavailable and view.cart_etag
    otlp.wait_for(trace_id, {"storefront", "cart"})
    await asyncio.sleep(1.0)
    assert "catalog" not in {s.service_name for s in otlp.spans_of_trace(trace_id)}


def _assert_snapshot(view: sf.CartView, cart: cart_pb2.Cart) -> None:
    assert view.catalog_unavailable
    assert [line.item for line in view.items] == list(cart.items)
    assert all(line.availability == sf.AVAILABILITY_UNKNOWN for line in view.items)
    assert [line.current_price for line in view.items] == [i.unit_price for i in cart.items]
    assert not any(line.price_changed or line.stock_quantity for line in view.items)
    assert view.total_current_amount == view.total_amount == cart.total_amount


async def test_a_frozen_then_stopped_catalog_gives_the_carts_snapshot_within_the_deadline(
    spawn_service: ServiceSpawner, channel_to: ChannelTo, catalog: Catalog, new_user: NewUser
) -> None:
    shopper = new_user()
    first, second = await _book(catalog, 1500, 5), await _book(catalog, 2500, 5)
    cart = await _fill_cart(channel_to("cart", shopper.token), [(first.id, 1), (second.id, 2)])

    own_catalog, catalog_address = spawn_service("catalog")
    await asyncio.to_thread(wait_for_health, catalog_address, "SERVING")
    # One storefront bounded by the caller's deadline only (a catalog budget far above
    # it), one by its configured catalog budget.
    _, by_deadline_address = spawn_service(
        "storefront",
        CLOUDSHELF_CATALOG_ADDR=catalog_address,
        **{CATALOG_BUDGET_ENV: "30", ANSWER_RESERVE_ENV: "0.3"},
    )
    _, by_budget_address = spawn_service(
        "storefront", CLOUDSHELF_CATALOG_ADDR=catalog_address, **{CATALOG_BUDGET_ENV: "0.3"}
    )
    for address in (by_deadline_address, by_budget_address):
        # Its health check of the catalog goes over the channel its views use.
        await asyncio.to_thread(wait_for_health, address, "SERVING", "dependency/catalog")
    by_deadline = _storefront(spawn_service.channel(by_deadline_address, shopper.token))
    by_budget = _storefront(spawn_service.channel(by_budget_address, shopper.token))
    live = await _view(by_deadline)
    assert not live.catalog_unavailable and live.items[0].current_price == usd(1500)
    assert not (await _view(by_budget)).catalog_unavailable

    own_catalog.signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        # Answered, not DEADLINE_EXCEEDED: the catalog's call ended early enough.
        _assert_snapshot(await _view(by_deadline, seconds=2.0), cart)
        assert time.monotonic() - started < 2.0

        started = time.monotonic()
        _assert_snapshot(await _view(by_budget, seconds=10), cart)
        # Without its 0.3 s budget the catalog's call would last the caller's 10 s.
        assert time.monotonic() - started < 5.0
    finally:
        own_catalog.signal(signal.SIGCONT)
    assert not (await _view(by_deadline)).catalog_unavailable

    own_catalog.stop()
    started = time.monotonic()
    _assert_snapshot(await _view(by_deadline, seconds=5.0), cart)
    assert time.monotonic() - started < 3.0  # refused at once, not waited for


async def test_the_carts_refusals_pass_through_and_its_outage_is_unavailable(
    spawn_service: ServiceSpawner, channel_to: ChannelTo, shopper: User
) -> None:
    # No token and no session credential: the cart's own UNAUTHENTICATED, details intact.
    try:
        await _view(_storefront(channel_to("storefront", None)), seconds=5)
    except grpc.aio.AioRpcError as exc:
        details = details_of_error(exc)
        assert details.code == grpc.StatusCode.UNAUTHENTICATED
        assert details.error_info is not None and details.error_info.reason == "SESSION_CREDENTIAL_MISSING"
    else:
        raise AssertionError("expected UNAUTHENTICATED")

    # A cart service that cannot be reached: UNAVAILABLE (retry later), never INTERNAL.
    _, address = spawn_service("storefront", CLOUDSHELF_CART_ADDR=f"127.0.0.1:{free_port()}")
    await asyncio.to_thread(wait_for_health, address, "NOT_SERVING")
    try:
        await _view(_storefront(spawn_service.channel(address, shopper.token)), seconds=5)
    except grpc.aio.AioRpcError as exc:
        details = details_of_error(exc)
        assert details.code == grpc.StatusCode.UNAVAILABLE, details.message
        assert details.error_info is not None and details.error_info.reason == CART_UNAVAILABLE
        assert "127.0.0.1" not in details.message  # no peer addresses in answers
    else:
        raise AssertionError("expected UNAVAILABLE")
