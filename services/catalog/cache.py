"""The catalog's Redis cache: cache-aside with the seed's TTL tiers.

- Books live under `catalog:book:<id>` (1 h). A write replaces the entry with a short-lived
  tombstone, and loaders store with SET NX, so a reader that fetched the old row before the
  commit cannot put it back after the invalidation.
- Search results (15 min) and category subtrees (2 h) live under a generation number that
  a write increments: old entries become unreachable at once and expire by themselves, no
  KEYS or SCAN needed.
- Popular lists are kept in process for 5 min (the seed's "local" tier).
- One loader per key per process: concurrent misses wait for the first loader.
- Redis trouble never fails a call: after an error the cache is bypassed for a moment and
  the service answers from PostgreSQL (its health reports `dependency/redis` down).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")

BOOK_TTL = 3600
SEARCH_TTL = 900
CATEGORY_TTL = 7200
POPULAR_TTL = 300
TOMBSTONE_TTL = 10
_TOMBSTONE = b"\x00invalidated"
# After a Redis error, skip it for this long instead of paying a timeout on every call.
_BYPASS_SECONDS = 2.0


class CatalogCache:
    def __init__(self, client: aioredis.Redis, prefix: str = "catalog") -> None:
        self.redis = client
        self.prefix = prefix
        self._bypass_until = 0.0
        self._inflight: dict[str, asyncio.Future[object]] = {}
        self._local: dict[str, tuple[float, object]] = {}
        # Invalidations that failed while Redis was unreachable, replayed once it answers:
        # if it comes back with its data (a partition, not a restart) nothing stale stays.
        self._missed_books: set[int] = set()
        self._missed_search = False

    # --- plumbing ------------------------------------------------------------------------

    def _available(self) -> bool:
        return time.monotonic() >= self._bypass_until

    def _failed(self, exc: RedisError) -> None:
        if self._available():
            log.warning("redis unavailable, serving from PostgreSQL: %s", exc)
        self._bypass_until = time.monotonic() + _BYPASS_SECONDS

    async def _get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        if self._missed_books or self._missed_search:
            await self._replay_missed()
        try:
            value = await self.redis.get(key)
        except RedisError as exc:
            self._failed(exc)
            return None
        if value is None or value == _TOMBSTONE:
            return None
        return value if isinstance(value, bytes) else value.encode()

    async def _set(self, key: str, value: bytes, ttl: int, *, only_if_absent: bool = False) -> None:
        if not self._available():
            return
        try:
            await self.redis.set(key, value, ex=ttl, nx=only_if_absent)
        except RedisError as exc:
            self._failed(exc)

    async def _generation(self, name: str) -> int:
        """Current generation of a namespace; -1 (do not cache) when Redis is away."""
        if not self._available():
            return -1
        try:
            value = await self.redis.get(f"{self.prefix}:{name}:gen")
        except RedisError as exc:
            self._failed(exc)
            return -1
        return int(value or 0)

    async def _bump(self, name: str) -> None:
        try:
            await self.redis.incr(f"{self.prefix}:{name}:gen")
        except RedisError as exc:
            # Entries of the old generation may be served until their TTL: log it loudly.
            log.error("could not invalidate %s cache: %s", name, exc)
            self._failed(exc)

    async def single_flight(self, key: str, loader: Callable[[], Awaitable[T]]) -> T:
        """Runs loader once for all concurrent callers asking for the same key."""
        pending = self._inflight.get(key)
        if pending is not None:
            return cast(T, await asyncio.shield(pending))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await loader()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    # --- books ---------------------------------------------------------------------------

    def _book_key(self, book_id: int) -> str:
        return f"{self.prefix}:book:{book_id}"

    async def get_book(self, book_id: int) -> bytes | None:
        return await self._get(self._book_key(book_id))

    async def get_books(self, book_ids: list[int]) -> dict[int, bytes]:
        if not book_ids or not self._available():
            return {}
        try:
            values = await self.redis.mget([self._book_key(i) for i in book_ids])
        except RedisError as exc:
            self._failed(exc)
            return {}
        return {
            book_id: value
            for book_id, value in zip(book_ids, values, strict=True)
            if isinstance(value, bytes) and value != _TOMBSTONE
        }

    async def put_book(self, book_id: int, data: bytes) -> None:
        await self._set(self._book_key(book_id), data, BOOK_TTL, only_if_absent=True)

    async def put_books(self, books: dict[int, bytes]) -> None:
        if not books or not self._available():
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for book_id, data in books.items():
                    pipe.set(self._book_key(book_id), data, ex=BOOK_TTL, nx=True)
                await pipe.execute()
        except RedisError as exc:
            self._failed(exc)

    async def invalidate_books(self, book_ids: list[int], *, search_too: bool = True) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for book_id in book_ids:
                    pipe.set(self._book_key(book_id), _TOMBSTONE, ex=TOMBSTONE_TTL)
                if search_too:
                    pipe.incr(f"{self.prefix}:search:gen")
                await pipe.execute()
        except RedisError as exc:
            log.warning("invalidation of books %s deferred until Redis answers: %s", book_ids, exc)
            self._missed_books.update(book_ids)
            self._missed_search = self._missed_search or search_too
            self._failed(exc)

    async def _replay_missed(self) -> None:
        books, search = sorted(self._missed_books), self._missed_search
        self._missed_books, self._missed_search = set(), False
        await self.invalidate_books(books, search_too=search)

    # --- generation namespaces: search results, category subtrees ------------------------

    async def search_key(self, query: str) -> str | None:
        generation = await self._generation("search")
        if generation < 0:
            return None
        digest = hashlib.sha256(query.encode()).hexdigest()[:32]
        return f"{self.prefix}:search:{generation}:{digest}"

    async def get_search(self, key: str | None) -> bytes | None:
        return None if key is None else await self._get(key)

    async def put_search(self, key: str | None, data: bytes) -> None:
        if key is not None:
            await self._set(key, data, SEARCH_TTL)

    async def category_key(self, name: str) -> str | None:
        generation = await self._generation("category")
        return None if generation < 0 else f"{self.prefix}:category:{generation}:{name}"

    async def get_category(self, key: str | None) -> bytes | None:
        return None if key is None else await self._get(key)

    async def put_category(self, key: str | None, data: bytes) -> None:
        if key is not None:
            await self._set(key, data, CATEGORY_TTL)

    async def invalidate_categories(self) -> None:
        await self._bump("category")
        await self._bump("search")

    # --- in-process tier -----------------------------------------------------------------

    def get_local(self, key: str) -> object | None:
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put_local(self, key: str, value: object, ttl: float = POPULAR_TTL) -> None:
        self._local[key] = (time.monotonic() + ttl, value)
