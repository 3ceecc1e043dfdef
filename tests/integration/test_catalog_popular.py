"""ListPopularBooks from the materialized view, refreshed by `cloudshelf job refresh-popular`."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

import asyncpg
import grpc

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from services.catalog.popular import refresh_popular_books
from tests.conftest import expect_error, run_cli
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

REFRESH_TIME = "SELECT refreshed_at FROM book_catalog.popular_books_refresh"


async def new_category(catalog: CatalogServiceAsyncStub, parent_id: int = 0) -> pb.Category:
    category = pb.Category(name=f"Pop {word()}", parent_category_id=parent_id)
    return (await catalog.CreateCategory(pb.CreateCategoryRequest(category=category))).category


async def test_popular_books_per_category_after_refresh(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    parent = await new_category(catalog)
    child = await new_category(catalog, parent.id)
    sold = {}
    for category, purchases in ((parent.id, 3), (child.id, 9), (child.id, 5), (parent.id, 0)):
        created = (
            await catalog.CreateBook(pb.CreateBookRequest(book=book(category_id=category)))
        ).book
        await catalog.AdjustInventory(
            pb.AdjustInventoryRequest(
                adjustments=[pb.InventoryAdjustment(book_id=created.id, delta=20)]
            )
        )
        if purchases:
            await catalog.AdjustInventory(
                pb.AdjustInventoryRequest(
                    adjustments=[
                        pb.InventoryAdjustment(
                            book_id=created.id, delta=-purchases, is_purchase=True
                        )
                    ]
                )
            )
        sold[created.id] = purchases

    job = await run_cli(stack, "job", "refresh-popular")
    assert job.returncode == 0, job.stderr
    assert "refreshed" in job.stdout

    popular = await catalog.ListPopularBooks(
        pb.ListPopularBooksRequest(category_id=parent.id, limit=10)
    )
    expected = sorted((b for b, n in sold.items() if n), key=lambda b: -sold[b])
    assert [p.book_id for p in popular.books] == expected  # the subtree, best sellers first
    assert [p.rank for p in popular.books] == [1, 2, 3]
    assert popular.books[0].purchase_count == 9 and popular.HasField("refresh_time")

    overall = await catalog.ListPopularBooks(pb.ListPopularBooksRequest(limit=50))
    counts = [p.purchase_count for p in overall.books]
    assert counts == sorted(counts, reverse=True) and counts[0] >= 9
    await expect_error(
        catalog.ListPopularBooks(pb.ListPopularBooksRequest(limit=500)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    )


async def _view_rows(conn: asyncpg.Connection) -> dict[int, str]:
    """Each ranked book's row version: xmin changes whenever a refresh rewrites the row."""
    rows = await conn.fetch("SELECT id, xmin::text AS xmin FROM book_catalog.popular_books")
    return {row["id"]: row["xmin"] for row in rows}


async def test_a_refresh_with_nothing_changed_rewrites_no_row(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    category = await new_category(catalog)
    created = (
        await catalog.CreateBook(pb.CreateBookRequest(book=book(category_id=category.id)))
    ).book
    for delta, purchase in ((10, False), (-4, True)):
        await catalog.AdjustInventory(
            pb.AdjustInventoryRequest(
                adjustments=[
                    pb.InventoryAdjustment(book_id=created.id, delta=delta, is_purchase=purchase)
                ]
            )
        )
    pool = await asyncpg.create_pool(stack.postgres.dsn("catalog"), min_size=1, max_size=1)
    try:
        await refresh_popular_books(pool)
        async with pool.acquire() as conn:
            before = await _view_rows(conn)
            first_time = await conn.fetchval(REFRESH_TIME)
        assert created.id in before

        await refresh_popular_books(pool)
        async with pool.acquire() as conn:
            assert await _view_rows(conn) == before  # no row deleted, inserted or rewritten
            refreshed = await conn.fetchval(REFRESH_TIME)
        assert refreshed > first_time

        # A limit no other test asks for: the catalog keeps answers in memory for minutes.
        popular = await catalog.ListPopularBooks(pb.ListPopularBooksRequest(limit=97))
        assert popular.refresh_time.ToDatetime(tzinfo=UTC) == refreshed

        # A sale changes the book's row, and the refresh rewrites it (the check above can fail).
        await catalog.AdjustInventory(
            pb.AdjustInventoryRequest(
                adjustments=[pb.InventoryAdjustment(book_id=created.id, delta=-1, is_purchase=True)]
            )
        )
        await refresh_popular_books(pool)
        async with pool.acquire() as conn:
            after = await _view_rows(conn)
        assert after[created.id] != before[created.id]
    finally:
        await pool.close()
