"""Pure catalog logic: ISBN checks, money, page tokens, single-flight loading, search SQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.paging import Int, decode_page_token, encode_page_token, split_page
from services.catalog.cache import CatalogCache
from services.catalog.search import (
    NO_WORDS,
    QueryWords,
    SearchFilters,
    broad_search_sql,
    round_estimate,
    small_search_sql,
)
from services.catalog.validation import (
    check_isbn10,
    check_isbn13,
    decimal_to_money,
    isbn10_problem,
    isbn13_problem,
    money_to_decimal,
)


@pytest.mark.parametrize("isbn", ["9780306406157", "978-0-306-40615-7", "9781861972712"])
def test_valid_isbn13(isbn: str) -> None:
    assert check_isbn13("isbn_13", isbn) == isbn.replace("-", "")


@pytest.mark.parametrize("isbn", ["0306406152", "080442957X", "0-8044-2957-x"])
def test_valid_isbn10(isbn: str) -> None:
    assert isbn10_problem(isbn.replace("-", "").upper()) is None
    check_isbn10("isbn_10", isbn)


def test_invalid_isbns_say_why() -> None:
    assert isbn13_problem("9780306406158") == "check digit should be 7"
    assert isbn13_problem("97803064061") == "must be 13 digits"
    assert isbn10_problem("0306406153") == "check digit should be 2"
    assert isbn10_problem("X306406152") is not None
    with pytest.raises(InvalidArgument, match=r"book\.isbn_13: check digit"):
        check_isbn13("book.isbn_13", "9780306406158")


def test_money_round_trips_exactly() -> None:
    for minor in (0, 1, 99, 1999, 999_999):
        amount = money_to_decimal("p", common_pb2.Money(minor_units=minor, currency_code="USD"))
        assert decimal_to_money(amount).minor_units == minor
    assert money_to_decimal("p", common_pb2.Money(minor_units=1999)) == Decimal("19.99")
    with pytest.raises(InvalidArgument, match=r"p: must be < 10000\.00"):
        money_to_decimal("p", common_pb2.Money(minor_units=1_000_000))


def test_page_tokens_are_bound_to_their_query() -> None:
    after = {"after": Int()}
    token = encode_page_token({"after": 42}, {"category": 7})
    assert decode_page_token(token, {"category": 7}, after) == {"after": 42}
    assert decode_page_token("", {"category": 7}, after) is None
    with pytest.raises(InvalidArgument, match="different query"):
        decode_page_token(token, {"category": 8}, after)
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_page_token("not-a-token!", {"category": 7}, after)


def test_split_page_knows_when_another_page_exists() -> None:
    page, token = split_page([1, 2, 3], 2, lambda x: {"after": x}, "q")
    assert list(page) == [1, 2] and decode_page_token(token, "q", {"after": Int()}) == {"after": 2}
    assert split_page([1, 2], 2, lambda x: {"after": x}, "q") == ([1, 2], "")


async def test_one_loader_per_key_under_a_stampede() -> None:
    cache = CatalogCache(aioredis.Redis())  # single_flight itself never touches Redis
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "book"

    results = await asyncio.gather(*(cache.single_flight("book:1", load) for _ in range(50)))
    assert results == ["book"] * 50 and calls == 1
    await cache.single_flight("book:1", load)  # a later miss loads again
    assert calls == 2


async def test_a_failed_load_fails_every_waiter_and_is_not_remembered() -> None:
    cache = CatalogCache(aioredis.Redis())

    async def broken() -> str:
        await asyncio.sleep(0.01)
        raise ConnectionError("db down")

    results = await asyncio.gather(
        *(cache.single_flight("k", broken) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await cache.single_flight("k", lambda: asyncio.sleep(0, result="ok")) == "ok"


def test_search_sql_uses_only_the_given_filters() -> None:
    bare = SearchFilters("dune", None, None, None, None, None)
    words = QueryWords(searchable=True)
    sql, args = broad_search_sql(bare, words, "price_asc", 0, 20, count_total=True)
    assert (
        "category_id = ANY" not in sql and "b.price >=" not in sql and args[:3] == ["dune", 20, 0]
    )
    assert "ORDER BY b.price ASC, b.id" in sql
    assert args[3] == "b.status = 'active' AND b.search_vector @@ q.query"  # search_total's
    full = SearchFilters("dune", (1, 2), Decimal("5"), Decimal("9"), "ebook", "fr")
    sql, args = small_search_sql(full, words, "price_asc", 0, 20, 10_000)
    assert args[:6] == ["dune", [1, 2], Decimal("5"), Decimal("9"), "ebook", "fr"]
    assert "search_vector @@" in sql and "LIMIT 10001" in sql
    sql, _ = broad_search_sql(bare, NO_WORDS, "relevance", 0, 20, count_total=True)
    assert "search_vector @@" not in sql and "purchase_count DESC" in sql  # no words: best sellers
    # One word: its rank levels, checked against their bounds, before every match.
    sql, args = broad_search_sql(
        bare, QueryWords(True, "dune"), "relevance", 0, 20, count_total=False
    )
    assert "ranked_lexemes(b.search_vector) &&" in sql and ["dune:1", "dune:2"] in args
    assert "min(k0) >= 0.165" in sql


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(0, 0), (57.4, 57), (421_150.0, 420_000), (135_150.0, 140_000), (20_049.9, 20_000)],
)
def test_estimates_keep_two_significant_digits(value: float, rounded: int) -> None:
    assert round_estimate(value) == rounded
