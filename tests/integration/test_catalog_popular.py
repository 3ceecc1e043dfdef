"""ListPopularBooks from the materialized view, refreshed by `cloudshelf job refresh-popular`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from tests.conftest import expect_error, run_cli
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub


async def test_popular_books_per_category_after_refresh(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    parent = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"Pop {word()}"))
        )
    ).category
    child = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(
                category=pb.Category(name=f"Sub {word()}", parent_category_id=parent.id)
            )
        )
    ).category
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
