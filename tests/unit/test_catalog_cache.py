"""The catalog cache's pure logic: value encoding, merged invalidations, single flight."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.catalog.cache import (
    CatalogCache,
    Invalidation,
    _pool_exhausted,
    book_data,
    book_marker,
    book_value,
)


def test_book_values_carry_their_version_and_markers_hold_no_book() -> None:
    assert book_value(7, b"\x08\x01:x") == b"v7:\x08\x01:x"
    assert book_data(book_value(7, b"\x08\x01:x")) == b"\x08\x01:x"
    assert book_data(book_marker(8)) is None
    assert book_data(None) is None
    assert book_data(b"garbage") is None


def test_invalidation_rows_merge_to_the_newest_version_per_book() -> None:
    rows = [
        {"id": 1, "book_id": 5, "book_version": 3, "old_slug": None, "generation": None},
        {"id": 2, "book_id": 5, "book_version": 2, "old_slug": "old", "generation": None},
        {"id": 3, "book_id": None, "book_version": None, "old_slug": None, "generation": "search"},
        {"id": 4, "book_id": None, "book_version": None, "old_slug": None, "generation": "x"},
    ]
    merged = Invalidation.of_rows(rows)
    assert merged.row_ids == [1, 2, 3, 4]
    assert merged.books == {5: 3}
    assert merged.slugs == {"old"}
    assert merged.generations == {"search"}  # unknown names are ignored


def test_a_full_redis_pool_is_load_not_an_outage() -> None:
    busy = RedisConnectionError("No connection available.")
    busy.__cause__ = TimeoutError()
    assert _pool_exhausted(busy)
    assert not _pool_exhausted(RedisConnectionError("Connection refused"))


@pytest.fixture
def cache() -> CatalogCache:
    return CatalogCache(aioredis.Redis())  # single flight never talks to Redis


async def test_a_cancelled_caller_leaves_the_shared_load_to_the_others(
    cache: CatalogCache,
) -> None:
    release = asyncio.Event()
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await release.wait()
        return "book"

    first = asyncio.ensure_future(cache.single_flight("k", load))
    second = asyncio.ensure_future(cache.single_flight("k", load))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await second == "book"
    assert first.cancelled() and loads == 1


async def test_the_load_stops_when_nobody_waits_and_the_next_caller_starts_anew(
    cache: CatalogCache,
) -> None:
    started: list[asyncio.Event] = []
    stopped = asyncio.Event()

    async def load() -> str:
        started.append(asyncio.Event())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "never"

    only = asyncio.ensure_future(cache.single_flight("k", load))
    await asyncio.sleep(0)
    only.cancel()
    await asyncio.wait_for(stopped.wait(), 1)

    async def quick() -> str:
        return "fresh"

    assert await cache.single_flight("k", quick) == "fresh"
    assert len(started) == 1


async def test_forgotten_loads_are_not_joined(cache: CatalogCache) -> None:
    release = asyncio.Event()

    async def old() -> str:
        await release.wait()
        return "before the write"

    async def new() -> str:
        return "after the write"

    earlier = asyncio.ensure_future(cache.single_flight("book:1", old))
    await asyncio.sleep(0)
    cache.forget_loads(["book:1"])
    assert await cache.single_flight("book:1", new) == "after the write"
    release.set()
    assert await earlier == "before the write"


async def test_errors_reach_every_waiter(cache: CatalogCache) -> None:
    async def failing() -> str:
        await asyncio.sleep(0.01)
        raise LookupError("no book")

    results = await asyncio.gather(
        cache.single_flight("k", failing), cache.single_flight("k", failing), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)
