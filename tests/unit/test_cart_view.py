"""The storefront's cart view: live catalog data over the stored cart."""

from __future__ import annotations

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2
from services.storefront.handlers import build_cart_view


def _usd(minor: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor, currency_code="USD")


def _cart() -> cart_pb2.Cart:
    cart = cart_pb2.Cart(
        owner=cart_pb2.CartOwner(user_id="u1"),
        total_items=3,
        total_amount=_usd(3500),
        etag='W/"4a1b"',
    )
    cart.items.add(book_id=1, title="Dune", unit_price=_usd(1000), quantity=2)
    cart.items.add(book_id=2, title="Emma", unit_price=_usd(1500), quantity=1)
    return cart


def test_live_prices_and_stock_are_shown() -> None:
    books = {
        1: catalog_pb2.Book(
            id=1, price=_usd(1200), stock_quantity=5, status=catalog_pb2.BOOK_STATUS_ACTIVE
        ),
        2: catalog_pb2.Book(
            id=2, price=_usd(1500), stock_quantity=0, status=catalog_pb2.BOOK_STATUS_ACTIVE
        ),
    }
    view = build_cart_view(_cart(), books)
    first, second = view.items
    assert first.price_changed and first.current_price.minor_units == 1200 and first.available
    assert not second.price_changed and not second.available
    assert view.total_amount.minor_units == 3500
    assert view.total_current_amount.minor_units == 2 * 1200 + 1500
    assert view.cart_etag == 'W/"4a1b"' and not view.catalog_unavailable


def test_a_book_gone_from_the_catalog_is_flagged() -> None:
    books = {
        1: catalog_pb2.Book(
            id=1, price=_usd(1000), stock_quantity=5, status=catalog_pb2.BOOK_STATUS_ACTIVE
        )
    }
    view = build_cart_view(_cart(), books)
    assert view.items[1].in_catalog is False
    assert view.items[1].available is False


def test_catalog_down_shows_stored_data() -> None:
    view = build_cart_view(_cart(), None)
    assert view.catalog_unavailable
    assert all(item.in_catalog for item in view.items)
    assert view.total_current_amount.minor_units == 3500
