"""SearchBooks' totals and relevance order through gRPC, on a catalog of their own whose
exact-total bound is lowered (CLOUDSHELF_CATALOG_SEARCH_EXACT_TOTAL_MAX) so that a few
books cross it: exact up to the bound, flagged estimates above it, and the same pages as
ranking every match (the rank levels of one-word queries)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest_asyncio

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from services.catalog.demo import seed_catalog
from services.catalog.search import EXACT_TOTAL_MAX_ENV
from tests.conftest import ServiceSpawner
from tests.factories import book, usd, word

EXACT_MAX = 5
SORTS = [
    pb.SEARCH_SORT_RELEVANCE,
    pb.SEARCH_SORT_PRICE_ASC,
    pb.SEARCH_SORT_PRICE_DESC,
    pb.SEARCH_SORT_RATING,
    pb.SEARCH_SORT_NEWEST,
]


@pytest_asyncio.fixture
async def small_bound_catalog(
    spawn_service: ServiceSpawner, catalog_dsn: str, tmp_path: Path
) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceAsyncStub]:
    """A catalog on a database and a Redis of its own, exact totals up to 5 matches."""
    overrides = {EXACT_TOTAL_MAX_ENV: str(EXACT_MAX)}
    async with spawn_service.own_catalog(catalog_dsn, tmp_path, **overrides) as catalog:
        yield catalog


async def all_pages(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, request: pb.SearchBooksRequest
) -> tuple[list[int], set[tuple[int, bool]]]:
    """Every result id in order, and the (total, estimate) pairs the pages gave."""
    ids: list[int] = []
    totals: set[tuple[int, bool]] = set()
    while True:
        page = await catalog.SearchBooks(request)
        ids += [b.id for b in page.books]
        totals.add((page.total_count, page.total_count_is_estimate))
        if not page.next_page_token:
            return ids, totals
        request.page_token = page.next_page_token


async def test_totals_are_exact_up_to_the_bound_and_flagged_above(
    small_bound_catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
) -> None:
    catalog = small_bound_catalog
    tag = word()
    for i in range(EXACT_MAX):
        await catalog.CreateBook(
            pb.CreateBookRequest(book=book(title=f"Atlas {tag} {i}", price=usd(100 + i)))
        )
    for sort in SORTS:
        ids, totals = await all_pages(
            catalog, pb.SearchBooksRequest(query=tag, sort=sort, page_size=2)
        )
        assert len(ids) == EXACT_MAX and totals == {(EXACT_MAX, False)}
    # A filter that leaves fewer: still exact.
    cheap = pb.SearchBooksRequest(query=tag, max_price=usd(101), page_size=10)
    assert (await catalog.SearchBooks(cheap)).total_count == 2

    for i in range(2):
        await catalog.CreateBook(pb.CreateBookRequest(book=book(title=f"Atlas {tag} more {i}")))
    for sort in SORTS:
        ids, totals = await all_pages(
            catalog, pb.SearchBooksRequest(query=tag, sort=sort, page_size=3)
        )
        # Above the bound the total is an estimate, flagged, and the same on every page;
        # on a catalog this small the sample is the whole table: the count is right.
        assert len(ids) == EXACT_MAX + 2 and totals == {(EXACT_MAX + 2, True)}
    # Filters count the same way: 7 matches, 6 of them in the price range.
    ranged = pb.SearchBooksRequest(query=tag, min_price=usd(101), page_size=10)
    found = await catalog.SearchBooks(ranged)
    assert (found.total_count, found.total_count_is_estimate) == (EXACT_MAX + 1, True)
    # As typed: "<tag>x" is one edit from the tag, which typo tolerance would search instead.
    nothing = await catalog.SearchBooks(
        pb.SearchBooksRequest(query=f"{tag}x", page_size=10, exact_query=True)
    )
    assert (nothing.total_count, nothing.total_count_is_estimate, len(nothing.books)) == (
        0,
        False,
        0,
    )


async def test_an_estimated_total_is_within_five_percent(
    small_bound_catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, catalog_dsn: str
) -> None:
    """On a catalog large enough to have word statistics, a common word's total (far above
    the bound) is the planner's estimate: within 5% of the count, two significant digits."""
    await seed_catalog(catalog_dsn, 3000, seed=5, progress=False)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        await conn.execute("ANALYZE book_catalog.books")
        common = await conn.fetch(
            "SELECT word FROM ts_stat('SELECT search_vector FROM book_catalog.books') "
            "WHERE length(word) > 3 AND plainto_tsquery('english', word)::text = "
            "quote_literal(word) ORDER BY ndoc DESC, word LIMIT 3"
        )
        for row in common:
            exact = await conn.fetchval(
                "SELECT count(*) FROM book_catalog.books WHERE status = 'active' "
                "AND search_vector @@ plainto_tsquery('english', $1)",
                row["word"],
            )
            found = await small_bound_catalog.SearchBooks(
                pb.SearchBooksRequest(query=row["word"], sort=pb.SEARCH_SORT_PRICE_ASC)
            )
            # Failed once in a clean-clone CI run (1,800 for 1,253) and never again in
            # three local runs: the message carries what tells the spelling and the planner
            # apart.
            seen = (row["word"], exact, found.total_count, found.corrected_query)
            assert not found.corrected_query, seen
            assert found.total_count_is_estimate and exact > EXACT_MAX
            assert abs(found.total_count - exact) <= 0.05 * exact, seen
            digits = str(found.total_count).rstrip("0")
            assert len(digits) <= 2
    finally:
        await conn.close()


async def reference_order(conn: asyncpg.Connection, query: str) -> list[tuple[int, float]]:
    """Every match ranked by the seed's own score (ts_rank), ties by id."""
    rows = await conn.fetch(
        "SELECT id, ts_rank(search_vector, plainto_tsquery('english', $1)) AS score "
        "FROM book_catalog.books WHERE status = 'active' "
        "AND search_vector @@ plainto_tsquery('english', $1) ORDER BY score DESC, id",
        query,
    )
    return [(r["id"], r["score"]) for r in rows]


async def test_one_word_relevance_pages_equal_ranking_every_match(
    small_bound_catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, catalog_dsn: str
) -> None:
    """The rank levels (a word twice with one in the title, once in the title, in the
    subtitle or an author's name, three to six times or once in the description) each fill
    some pages; every page is the same as ranking all matches."""
    catalog = small_bound_catalog
    tag = word()
    kinds = [
        {"title": f"{tag} and {tag}"},
        {"title": f"The {tag}", "description": f"All about {tag}."},
        {"title": f"On {tag}"},
        {"title": f"Book {word()}", "subtitle": f"A {tag}"},
        {"title": f"Book {word()}", "subtitle": f"{tag} {tag}", "description": tag},
        {"title": f"Book {word()}", "description": f"Some {tag} here."},
        {"title": f"Book {word()}", "description": f"{tag}, {tag} and more {tag}."},
        {"title": f"Book {word()}", "description": f"{tag} {tag} {tag} {tag}."},
        {"title": f"Book {word()}", "description": " ".join([tag] * 6)},
    ]
    for i in range(3):
        for fields in kinds:
            await catalog.CreateBook(pb.CreateBookRequest(book=book(price=usd(100 + i), **fields)))
    conn = await asyncpg.connect(catalog_dsn)
    try:
        expected = await reference_order(conn, tag)
        assert len(expected) == 3 * len(kinds)
        for size in (1, 2, 4, 7):
            ids, _ = await all_pages(catalog, pb.SearchBooksRequest(query=tag, page_size=size))
            assert ids == [book_id for book_id, _ in expected], size
        # Filters apply within the levels as well.
        ranged = pb.SearchBooksRequest(query=tag, min_price=usd(101), page_size=3)
        ids, _ = await all_pages(catalog, ranged)
        prices = dict(
            await conn.fetch(
                "SELECT id, price FROM book_catalog.books WHERE id = ANY($1::int[])",
                [book_id for book_id, _ in expected],
            )
        )
        assert ids == [i for i, _ in expected if prices[i] >= Decimal("1.01")]
    finally:
        await conn.close()


async def test_relevance_scores_equal_the_seeds_on_a_seeded_catalog(
    small_bound_catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, catalog_dsn: str
) -> None:
    """Common words of a seeded catalog, first and deeper pages: the same books in the
    same order as ranking every match by the seed's score."""
    await seed_catalog(catalog_dsn, 2000, seed=11, progress=False)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        await conn.execute("ANALYZE book_catalog.books")
        words = await conn.fetch(
            "SELECT word FROM ts_stat('SELECT search_vector FROM book_catalog.books') "
            "WHERE length(word) > 3 AND plainto_tsquery('english', word)::text = "
            "quote_literal(word) ORDER BY ndoc DESC, word LIMIT 4"
        )
        for row in words:
            expected = await reference_order(conn, row["word"])
            request = pb.SearchBooksRequest(query=row["word"], page_size=50)
            seen: list[int] = []
            for _ in range(4):
                page = await small_bound_catalog.SearchBooks(request)
                seen += [b.id for b in page.books]
                request.page_token = page.next_page_token
            assert seen == [book_id for book_id, _ in expected[: len(seen)]], row["word"]
    finally:
        await conn.close()


async def test_a_search_is_answered_when_the_page_is_empty(
    small_bound_catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
) -> None:
    response = await small_bound_catalog.SearchBooks(
        pb.SearchBooksRequest(query=f"{word()} {word()}")
    )
    assert (list(response.books), response.total_count) == ([], 0)
    assert not response.total_count_is_estimate
