"""The catalog's cache through gRPC: what is served from Redis, single flight under a
cancelled caller, read-your-writes, views, and which writes end which cached searches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from services.catalog.cache import CatalogCache, Invalidation, book_data
from tests.conftest import expect_error
from tests.factories import book, usd, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def create(catalog: CatalogServiceAsyncStub, **fields: Any) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(**fields)))).book


@asynccontextmanager
async def books_locked(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """Holds book_catalog.books in ACCESS EXCLUSIVE mode: every read of it waits."""
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("LOCK TABLE book_catalog.books IN ACCESS EXCLUSIVE MODE")
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


async def waiting_on_locks(stack: Stack) -> int:
    """Catalog queries waiting for a lock right now."""
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'catalog' "
                "AND application_name = 'catalog' AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await conn.close()


async def test_get_book_by_id_and_by_slug_are_served_from_the_cache(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    created = await create(catalog)
    by_id = (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book
    by_slug = (await catalog.GetBook(pb.GetBookRequest(slug=created.slug))).book
    assert by_id == by_slug and by_id.id == created.id
    async with books_locked(stack):  # PostgreSQL cannot answer: Redis must
        assert (await catalog.GetBook(pb.GetBookRequest(id=created.id), timeout=1)).book == by_id
        again = (await catalog.GetBook(pb.GetBookRequest(slug=created.slug), timeout=1)).book
        assert again == by_id


async def test_a_slug_change_is_seen_at_once(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    created = await create(catalog, slug=f"old-{word()}")
    await catalog.GetBook(pb.GetBookRequest(slug=created.slug))  # slug -> id now cached
    cache = aioredis.Redis.from_url(stack.redis.url)
    try:
        assert await cache.get(f"catalog:slug:{created.slug}") == str(created.id).encode()
        new_slug = f"new-{word()}"
        await catalog.UpdateBook(
            pb.UpdateBookRequest(
                book=pb.Book(id=created.id, slug=new_slug), update_mask=FieldMask(paths=["slug"])
            )
        )
        assert await cache.get(f"catalog:slug:{created.slug}") is None
    finally:
        await cache.aclose()
    await expect_error(catalog.GetBook(pb.GetBookRequest(slug=created.slug)), NOT_FOUND)
    moved = (await catalog.GetBook(pb.GetBookRequest(slug=new_slug))).book
    assert moved.id == created.id


async def test_a_cancelled_get_book_leaves_a_concurrent_one_answered(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    created = await create(catalog)  # not cached yet: the first GetBook loads it
    request = pb.GetBookRequest(id=created.id)
    async with books_locked(stack):
        impatient = asyncio.ensure_future(catalog.GetBook(request, timeout=0.3))
        await asyncio.sleep(0.1)  # the impatient call leads the load
        patient = asyncio.ensure_future(catalog.GetBook(request, timeout=10))
        no_deadline = asyncio.ensure_future(catalog.GetBook(request))
        await expect_error(impatient, grpc.StatusCode.DEADLINE_EXCEEDED)
        await asyncio.sleep(1.2)  # the database stays slow after the leader left
        assert not patient.done()
    started = time.monotonic()
    assert (await patient).book.id == created.id
    assert (await asyncio.wait_for(no_deadline, 5)).book.id == created.id
    assert time.monotonic() - started < 3


async def test_concurrent_identical_searches_share_one_query(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    tag = word()
    created = await create(catalog, title=f"Flight {tag}")
    request = pb.SearchBooksRequest(query=tag)
    async with books_locked(stack):
        searches = [
            asyncio.ensure_future(catalog.SearchBooks(request, timeout=15)) for _ in range(6)
        ]
        await asyncio.sleep(1.0)
        # One statement (the page and its total together), not six.
        assert await waiting_on_locks(stack) == 1
    answers = await asyncio.gather(*searches)
    assert all([b.id for b in a.books] == [created.id] for a in answers)


async def test_a_writer_reads_its_own_write(catalog: CatalogServiceAsyncStub) -> None:
    created = await create(catalog)
    await catalog.GetBook(pb.GetBookRequest(id=created.id))  # cached
    for price in (1001, 1002, 1003):
        await catalog.UpdateBook(
            pb.UpdateBookRequest(
                book=pb.Book(id=created.id, price=usd(price)),
                update_mask=FieldMask(paths=["price"]),
            )
        )
        assert (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book.price == usd(price)
        batch = await catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[created.id]))
        assert batch.books[0].price == usd(price)


async def test_views_never_rewrite_the_books_row_and_get_book_shows_them(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    created = await create(catalog)
    await catalog.GetBook(pb.GetBookRequest(id=created.id))  # cached with 0 views
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    cache = aioredis.Redis.from_url(stack.redis.url)
    try:
        row_version = "SELECT xmin::text AS xmin, version FROM book_catalog.books WHERE id = $1"
        before = await conn.fetchrow(row_version, created.id)
        counts = await asyncio.gather(
            *(catalog.RecordView(pb.RecordViewRequest(book_id=created.id)) for _ in range(5))
        )
        assert sorted(c.view_count for c in counts) == [1, 2, 3, 4, 5]
        # Same row version: no new tuple, no index entry, the search index untouched.
        assert await conn.fetchrow(row_version, created.id) == before

        # GetBook is served from the cache, whose Book still says 0 views, and shows 5:
        # the count RecordView keeps beside it in Redis.
        cached = book_data(await cache.get(f"catalog:book:{created.id}"))
        assert cached is not None and pb.Book.FromString(cached).view_count == 0
        assert (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book.view_count == 5
        batch = await catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[created.id]))
        assert batch.books[0].view_count == 5
        # Loaded afresh from PostgreSQL (book_stats), the count is the same.
        await cache.delete(f"catalog:book:{created.id}", f"catalog:views:{created.id}")
        assert (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book.view_count == 5
    finally:
        await cache.aclose()
        await conn.close()


async def test_list_books_lists_active_books_unless_asked(
    catalog: CatalogServiceAsyncStub,
) -> None:
    tag = word()
    category = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"Shelf {tag}", slug=f"shelf-{tag}"))
        )
    ).category
    statuses = [
        pb.BOOK_STATUS_ACTIVE,
        pb.BOOK_STATUS_INACTIVE,
        pb.BOOK_STATUS_DISCONTINUED,
        pb.BOOK_STATUS_ACTIVE,
    ]
    created = [await create(catalog, category_id=category.id, status=s) for s in statuses]

    shown = await catalog.ListBooks(pb.ListBooksRequest(category_id=category.id))
    assert [b.id for b in shown.books] == [created[0].id, created[3].id]
    everything = await catalog.ListBooks(
        pb.ListBooksRequest(category_id=category.id, include_inactive=True, page_size=2)
    )
    rest = await catalog.ListBooks(
        pb.ListBooksRequest(
            category_id=category.id,
            include_inactive=True,
            page_size=2,
            page_token=everything.next_page_token,
        )
    )
    assert [b.id for b in [*everything.books, *rest.books]] == [b.id for b in created]
    # A token is bound to its query: it cannot switch to active books only halfway.
    await expect_error(
        catalog.ListBooks(
            pb.ListBooksRequest(
                category_id=category.id, page_size=2, page_token=everything.next_page_token
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_stock_changes_keep_cached_searches_and_reviews_reorder_the_rating_sort(
    catalog: CatalogServiceAsyncStub,
) -> None:
    tag = word()
    first = await create(catalog, title=f"Stock {tag} one")
    second = await create(catalog, title=f"Stock {tag} two")
    by_price = pb.SearchBooksRequest(query=tag, sort=pb.SEARCH_SORT_PRICE_ASC)
    by_rating = pb.SearchBooksRequest(query=tag, sort=pb.SEARCH_SORT_RATING)
    assert [b.id for b in (await catalog.SearchBooks(by_rating)).books] == [first.id, second.id]
    assert (await catalog.SearchBooks(by_price)).books[0].stock_quantity == 0

    # Stock changes no search result: the cached page stays (its stock shows as loaded).
    await catalog.AdjustInventory(
        pb.AdjustInventoryRequest(adjustments=[pb.InventoryAdjustment(book_id=first.id, delta=5)])
    )
    assert (await catalog.GetBook(pb.GetBookRequest(id=first.id))).book.stock_quantity == 5
    assert (await catalog.SearchBooks(by_price)).books[0].stock_quantity == 0

    # A review changes the rating order: that sort is recomputed, the price sort is not.
    await catalog.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=second.id, rating=5)))
    assert [b.id for b in (await catalog.SearchBooks(by_rating)).books] == [second.id, first.id]
    assert (await catalog.SearchBooks(by_price)).books[0].stock_quantity == 0


async def test_purchases_reorder_best_sellers_and_pages_agree(
    catalog: CatalogServiceAsyncStub,
) -> None:
    tag = word()
    category = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"Sold {tag}", slug=f"sold-{tag}"))
        )
    ).category
    books = [await create(catalog, category_id=category.id) for _ in range(3)]
    # No search words: relevance ranks the best sellers first (ties by id).
    browse = pb.SearchBooksRequest(category_id=category.id, page_size=2)
    first_page = await catalog.SearchBooks(browse)
    assert [b.id for b in first_page.books] == [books[0].id, books[1].id]

    await catalog.AdjustInventory(
        pb.AdjustInventoryRequest(
            adjustments=[
                pb.InventoryAdjustment(book_id=books[2].id, delta=10),
                pb.InventoryAdjustment(book_id=books[2].id, delta=-3, is_purchase=True),
            ]
        )
    )
    first_page = await catalog.SearchBooks(browse)
    browse.page_token = first_page.next_page_token
    second_page = await catalog.SearchBooks(browse)
    order = [b.id for b in [*first_page.books, *second_page.books]]
    assert order == [books[2].id, books[0].id, books[1].id]


async def test_an_older_load_never_replaces_a_newer_value_or_marker(stack: Stack) -> None:
    client = aioredis.Redis.from_url(stack.redis.url)
    cache = CatalogCache(client, prefix=f"test-{word()}")
    try:
        await cache.put_book(1, 2, b"v2")
        await cache.put_book(1, 1, b"v1")  # a slow load of the row before the write
        assert (await cache.get_book(1))[0] == b"v2"

        await cache.apply(Invalidation(books={1: 3}))  # version 3 committed
        assert (await cache.get_book(1))[0] is None
        await cache.put_book(1, 2, b"v2")  # read before the commit, stored after it
        assert (await cache.get_book(1))[0] is None
        await cache.put_book(1, 3, b"v3")
        assert (await cache.get_book(1))[0] == b"v3"
        await cache.apply(Invalidation(books={1: 3}))  # applied again: harmless
        assert (await cache.get_book(1))[0] == b"v3"
    finally:
        await client.aclose()
