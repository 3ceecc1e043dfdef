"""The storefront's cart view: live catalog data over the stored cart, and the catalog's
time budget (the integration tests run the same through gRPC)."""

from __future__ import annotations

import pytest

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.storefront.v1 import storefront_pb2 as sf
from services.storefront.cart_view import (
    ANSWER_RESERVE_ENV,
    CATALOG_BUDGET_ENV,
    CatalogBudget,
    build_cart_view,
)

ACTIVE = catalog_pb2.BOOK_STATUS_ACTIVE


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


def _book(book_id: int, price: int, stock: int, status: int = ACTIVE) -> catalog_pb2.Book:
    return catalog_pb2.Book(
        id=book_id,
        price=_usd(price),
        stock_quantity=stock,
        status=status,  # type: ignore[arg-type]
        cover_image_url=f"https://covers.example/{book_id}.jpg",
    )


def test_live_prices_stock_and_covers_are_shown() -> None:
    view = build_cart_view(_cart(), {1: _book(1, 1200, 5), 2: _book(2, 1500, 0)})
    first, second = view.items
    assert first.price_changed and first.current_price == _usd(1200)
    assert first.availability == sf.AVAILABILITY_AVAILABLE and first.stock_quantity == 5
    assert first.cover_image_url == "https://covers.example/1.jpg"
    assert not second.price_changed and second.availability == sf.AVAILABILITY_OUT_OF_STOCK
    assert view.total_amount == _usd(3500)
    assert view.total_current_amount == _usd(2 * 1200 + 1500)
    assert view.cart_etag == 'W/"4a1b"' and not view.catalog_unavailable


@pytest.mark.parametrize(
    ("book", "expected"),
    [
        (_book(1, 1000, 2), sf.AVAILABILITY_AVAILABLE),  # exactly the line's quantity
        (_book(1, 1000, 1), sf.AVAILABILITY_INSUFFICIENT_STOCK),
        (_book(1, 1000, 0), sf.AVAILABILITY_OUT_OF_STOCK),
        (_book(1, 1000, 9, catalog_pb2.BOOK_STATUS_INACTIVE), sf.AVAILABILITY_NOT_FOR_SALE),
        (_book(1, 1000, 9, catalog_pb2.BOOK_STATUS_DISCONTINUED), sf.AVAILABILITY_NOT_FOR_SALE),
    ],
)
def test_availability_of_a_line_of_two_copies(book: catalog_pb2.Book, expected: int) -> None:
    view = build_cart_view(_cart(), {1: book, 2: _book(2, 1500, 3)})
    assert view.items[0].availability == expected


def test_a_book_gone_from_the_catalog_has_no_current_price_and_no_share_of_the_total() -> None:
    view = build_cart_view(_cart(), {1: _book(1, 1000, 5)})
    gone = view.items[1]
    assert gone.availability == sf.AVAILABILITY_NOT_IN_CATALOG
    assert not gone.HasField("current_price")
    assert view.total_current_amount == _usd(2 * 1000)
    assert view.total_amount == _usd(3500)


def test_catalog_down_shows_the_snapshot_with_availability_unknown() -> None:
    view = build_cart_view(_cart(), None)
    assert view.catalog_unavailable
    assert [line.availability for line in view.items] == [sf.AVAILABILITY_UNKNOWN] * 2
    assert [line.current_price for line in view.items] == [_usd(1000), _usd(1500)]
    assert not any(line.price_changed for line in view.items)
    assert view.total_current_amount == view.total_amount == _usd(3500)


def test_an_empty_cart_is_an_empty_view() -> None:
    empty = cart_pb2.Cart(owner=cart_pb2.CartOwner(user_id="u1"), total_amount=_usd(0))
    view = build_cart_view(empty, {})
    assert not view.items and not view.catalog_unavailable
    assert view.total_current_amount == _usd(0)


def test_the_catalog_budget_leaves_time_to_answer() -> None:
    budget = CatalogBudget(seconds=1.0, reserve=0.1)
    assert budget.for_call(None) == 1.0  # no caller deadline: the configured budget
    assert budget.for_call(30.0) == 1.0
    assert budget.for_call(0.5) == pytest.approx(0.4)
    # A short deadline keeps at most half of it back.
    assert budget.for_call(0.1) == pytest.approx(0.05)
    assert budget.for_call(0.0) == 0.0
    assert budget.for_call(-1.0) == 0.0


def test_the_catalog_budget_is_read_from_the_environment() -> None:
    budget = CatalogBudget.from_env({CATALOG_BUDGET_ENV: "0.25", ANSWER_RESERVE_ENV: "0.02"})
    assert budget == CatalogBudget(seconds=0.25, reserve=0.02)
    assert CatalogBudget.from_env({}) == CatalogBudget()
    with pytest.raises(ValueError, match=CATALOG_BUDGET_ENV):
        CatalogBudget.from_env({CATALOG_BUDGET_ENV: "0"})
    with pytest.raises(ValueError, match=CATALOG_BUDGET_ENV):
        CatalogBudget.from_env({CATALOG_BUDGET_ENV: "soon"})
