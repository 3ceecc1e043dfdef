"""The catalog's Redis cache: cache-aside with the seed's TTL tiers.

- Books live under `catalog:book:<id>` (1 h) as `v<version>:<serialized Book>`, where the
  version is `books.version` of the row that was read. A write leaves a marker
  `t<version>:` with the version it committed; a Lua script stores a value only when Redis
  holds nothing newer, so a load that read the row before a commit can never replace the
  newer value or marker, however late it arrives.
- `catalog:slug:<slug>` maps a slug to a book id (checked against the book on every read).
- `catalog:views:<id>` holds the latest view count RecordView produced; a cached Book's
  count is raised to it when read, so GetBook shows every recorded view.
- Search results (15 min) and category subtrees and lists (2 h) live under generation
  numbers that writes increment: old entries become unreachable at once and expire by
  themselves, no KEYS or SCAN needed. Category keys carry their generation; search entries
  are stamped with theirs instead, so a search reads the generations and its entries in one
  MGET. A search page also carries the generation of its sort when one exists
  ("search-rating", "search-popular"), so a review or a purchase ends only the searches it
  can reorder.
- Invalidations are durable: writes leave rows in `book_catalog.cache_invalidations` (see
  invalidations.py), applied here by the writer after commit or by any replica's loop.
- Popular lists are kept in process for 5 min (the seed's "local" tier).
- One load per key per process: concurrent misses share the first caller's load, which runs
  in a task of its own, so a caller that goes away (deadline, disconnect) cancels only its
  own wait.
- Redis trouble never fails a call: after an error the cache is bypassed for a moment and
  the service answers from PostgreSQL (its health reports `dependency/redis` down).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")

BOOK_TTL = 3600
SEARCH_TTL = 900
CATEGORY_TTL = 7200
POPULAR_TTL = 300
# After a Redis error, skip it for this long instead of paying a timeout on every call.
_BYPASS_SECONDS = 2.0

# Generation namespaces (bumped by rows of book_catalog.cache_invalidations).
SEARCH = "search"
SEARCH_RATING = "search-rating"
SEARCH_POPULAR = "search-popular"
CATEGORY = "category"
GENERATIONS = frozenset({SEARCH, SEARCH_RATING, SEARCH_POPULAR, CATEGORY})

# KEYS[1]: a book key; ARGV: version, value (`v<version>:...` or a marker `t<version>:`),
# ttl. Stores unless Redis holds a value of the same or a newer version, or a marker of a
# newer version (a marker of version N lets a value of version N replace it).
_PUT_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
    local kind, version = string.match(current, '^([vt])(%d+):')
    version = tonumber(version)
    local incoming = tonumber(ARGV[1])
    if version and kind == 'v' and version >= incoming then return 0 end
    if version and kind == 't' and version > incoming then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

# KEYS[1]: a counter; ARGV: value, ttl. Keeps the larger value (concurrent writers).
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""


def book_value(version: int, data: bytes) -> bytes:
    return b"v%d:" % version + data


def book_marker(version: int) -> bytes:
    return b"t%d:" % version


def book_data(value: object) -> bytes | None:
    """The serialized Book of a cached value; None for a marker or anything else."""
    if not isinstance(value, bytes) or not value.startswith(b"v"):
        return None
    separator = value.find(b":")
    return value[separator + 1 :] if separator > 0 else None


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, bytes) and value.isdigit() else None


@dataclass
class Invalidation:
    """What a set of cache_invalidations rows asks for, merged."""

    row_ids: list[int] = field(default_factory=list)
    # book id -> the newest committed version among the rows
    books: dict[int, int] = field(default_factory=dict)
    slugs: set[str] = field(default_factory=set)
    generations: set[str] = field(default_factory=set)

    @classmethod
    def of_rows(cls, rows: Iterable[Any]) -> Invalidation:
        merged = cls()
        for row in rows:
            merged.row_ids.append(row["id"])
            if row["book_id"] is not None:
                book_id, version = row["book_id"], row["book_version"]
                merged.books[book_id] = max(version, merged.books.get(book_id, version))
            if row["old_slug"] is not None:
                merged.slugs.add(row["old_slug"])
            if row["generation"] in GENERATIONS:
                merged.generations.add(row["generation"])
        return merged


def _pool_exhausted(exc: RedisError) -> bool:
    # BlockingConnectionPool's wait for a free connection timed out: Redis is busy here,
    # not down, so only this call skips the cache.
    return isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError)


class CatalogCache:
    def __init__(self, client: aioredis.Redis, prefix: str = "catalog") -> None:
        self.redis = client
        self.prefix = prefix
        self._bypass_until = 0.0
        # True while invalidations this process committed could not be applied to Redis:
        # it reads from PostgreSQL until they are (its own writes stay visible to it).
        self.behind = False
        self._inflight: dict[str, _Flight] = {}
        # Stores running in the background (referenced until done).
        self._puts: set[asyncio.Future[None]] = set()
        self._local: dict[str, tuple[float, object]] = {}
        self._put_if_newer = client.register_script(_PUT_IF_NEWER)
        self._raise_to = client.register_script(_RAISE_TO)

    # --- plumbing ------------------------------------------------------------------------

    def reachable(self) -> bool:
        return time.monotonic() >= self._bypass_until

    def _readable(self) -> bool:
        return not self.behind and self.reachable()

    def _failed(self, exc: RedisError) -> None:
        if _pool_exhausted(exc):
            log.info("redis pool busy, this call skips the cache: %s", exc)
            return
        if self.reachable():
            log.warning("redis unavailable, serving from PostgreSQL: %s", exc)
        self._bypass_until = time.monotonic() + _BYPASS_SECONDS

    async def _get(self, key: str) -> bytes | None:
        if not self._readable():
            return None
        try:
            value = await self.redis.get(key)
        except RedisError as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    async def _set(self, key: str, value: bytes, ttl: int) -> None:
        if not self.reachable():
            return
        try:
            await self.redis.set(key, value, ex=ttl)
        except RedisError as exc:
            self._failed(exc)

    async def _generations(self, names: Sequence[str]) -> list[int] | None:
        """Current generations of namespaces; None (do not cache) when Redis is away."""
        if not self._readable():
            return None
        try:
            values = await self.redis.mget([f"{self.prefix}:{name}:gen" for name in names])
        except RedisError as exc:
            self._failed(exc)
            return None
        return [int(value or 0) for value in values]

    async def single_flight(self, key: str, loader: Callable[[], Awaitable[T]]) -> T:
        """Runs loader once for all concurrent callers asking for the same key.

        The load is a task of its own: a caller cancelled while waiting stops waiting, and
        the others still get the result; the load itself is cancelled only when nobody
        waits for it any more (so a deadline still cancels an abandoned query)."""
        flight = self._inflight.get(key)
        if flight is None:
            flight = _Flight(asyncio.ensure_future(loader()))
            self._inflight[key] = flight
            flight.task.add_done_callback(lambda _: self._landed(key, flight))
        flight.waiters += 1
        try:
            return cast(T, await asyncio.shield(flight.task))
        except asyncio.CancelledError:
            if not flight.task.done():  # this caller went away, the load goes on
                flight.waiters -= 1
                if flight.waiters == 0:
                    # Nobody waits: stop the query; a later caller starts a new load.
                    self._landed(key, flight)
                    flight.task.cancel()
            raise

    def _landed(self, key: str, flight: _Flight) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        if flight.task.done() and not flight.task.cancelled():
            flight.task.exception()  # retrieved: no "never retrieved" warning

    def forget_loads(self, keys: Iterable[str]) -> None:
        """Later callers start a new load instead of joining one that began before a
        write committed (a writer reads its own write)."""
        for key in keys:
            self._inflight.pop(key, None)

    # --- books ---------------------------------------------------------------------------

    def _book_key(self, book_id: int) -> str:
        return f"{self.prefix}:book:{book_id}"

    def _views_key(self, book_id: int) -> str:
        return f"{self.prefix}:views:{book_id}"

    async def get_book(self, book_id: int) -> tuple[bytes | None, int | None]:
        """A cached Book and the latest recorded view count, in one round trip."""
        found, views = await self.get_books([book_id])
        return found.get(book_id), views.get(book_id)

    async def get_books(self, book_ids: list[int]) -> tuple[dict[int, bytes], dict[int, int]]:
        if not book_ids or not self._readable():
            return {}, {}
        keys = [self._book_key(i) for i in book_ids] + [self._views_key(i) for i in book_ids]
        try:
            values = await self.redis.mget(keys)
        except RedisError as exc:
            self._failed(exc)
            return {}, {}
        books, views = values[: len(book_ids)], values[len(book_ids) :]
        found = {i: d for i, v in zip(book_ids, books, strict=True) if (d := book_data(v))}
        counts = {i: c for i, v in zip(book_ids, views, strict=True) if (c := _count(v))}
        return found, counts

    async def put_book(self, book_id: int, version: int, data: bytes) -> None:
        await self.put_books({book_id: (version, data)})

    async def put_books(self, books: dict[int, tuple[int, bytes]]) -> None:
        """Stores loaded books unless Redis has a newer version of one (or its marker)."""
        if not books or not self.reachable():
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for book_id, (version, data) in books.items():
                    await self._put_if_newer(
                        keys=[self._book_key(book_id)],
                        args=[version, book_value(version, data), BOOK_TTL],
                        client=pipe,
                    )
                await pipe.execute()
        except RedisError as exc:
            self._failed(exc)

    async def record_views(self, book_id: int, count: int) -> None:
        if not self.reachable():
            return
        try:
            await self._raise_to(keys=[self._views_key(book_id)], args=[count, BOOK_TTL])
        except RedisError as exc:
            self._failed(exc)

    # --- slugs ---------------------------------------------------------------------------

    def _slug_key(self, slug: str) -> str:
        return f"{self.prefix}:slug:{slug}"

    async def get_slug(self, slug: str) -> int | None:
        return _count(await self._get(self._slug_key(slug)))

    async def put_slug(self, slug: str, book_id: int) -> None:
        await self._set(self._slug_key(slug), b"%d" % book_id, BOOK_TTL)

    async def forget_slug(self, slug: str) -> None:
        if not self.reachable():
            return
        try:
            await self.redis.delete(self._slug_key(slug))
        except RedisError as exc:
            self._failed(exc)

    # --- invalidation --------------------------------------------------------------------

    async def apply(self, invalidation: Invalidation) -> bool:
        """Applies committed invalidations; False when Redis could not take them (the rows
        stay, and this process reads from PostgreSQL until they are applied)."""
        self.forget_loads(
            [f"book:{i}" for i in invalidation.books] + [f"slug:{s}" for s in invalidation.slugs]
        )
        if not self.reachable():
            self.behind = True
            return False
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for book_id, version in invalidation.books.items():
                    await self._put_if_newer(
                        keys=[self._book_key(book_id)],
                        args=[version, book_marker(version), BOOK_TTL],
                        client=pipe,
                    )
                for slug in invalidation.slugs:
                    pipe.delete(self._slug_key(slug))
                for name in sorted(invalidation.generations):
                    pipe.incr(f"{self.prefix}:{name}:gen")
                await pipe.execute()
        except RedisError as exc:
            log.warning(
                "cache invalidation left for the invalidation loop (%d rows): %s",
                len(invalidation.row_ids),
                exc,
            )
            self._failed(exc)
            self.behind = True
            return False
        return True

    async def caught_up(self) -> None:
        """Called once no invalidation is left to apply: reads may use Redis again."""
        if not self.behind or not self.reachable():
            return
        try:
            await self.redis.ping()
        except RedisError as exc:
            self._failed(exc)
            return
        log.info("cache invalidations applied; reading from Redis again")
        self.behind = False

    # --- generation namespaces: search results, category subtrees ------------------------

    async def search_lookup(
        self, page_query: str, total_query: str, sort_generation: str | None, category: bool
    ) -> SearchLookup:
        """A search's cached page and total, with the generations they must carry, and the
        category generation when asked (for the subtree of a category filter): one MGET.

        Search entries are stamped with the generations current when they were loaded, not
        keyed by them: one round trip reads both the generations and the entries, and an
        entry of an older generation is a miss (it is overwritten, or expires)."""
        names = [SEARCH] + ([sort_generation] if sort_generation else [])
        if category:
            names.append(CATEGORY)
        page_key = f"{self.prefix}:search:page:{_digest(page_query)}"
        total_key = f"{self.prefix}:search:total:{_digest(total_query)}"
        if not self._readable():
            return SearchLookup(None, None)
        try:
            values = await self.redis.mget(
                [f"{self.prefix}:{name}:gen" for name in names] + [page_key, total_key]
            )
        except RedisError as exc:
            self._failed(exc)
            return SearchLookup(None, None)
        generations = [int(value or 0) for value in values[: len(names)]]
        category_generation = generations.pop() if category else None
        page_stamp = ".".join(map(str, generations)).encode() + b"|"
        total_stamp = b"%d|" % generations[0]
        page, total = values[len(names) :]
        return SearchLookup(
            page=_stamped(page, page_stamp),
            total=_stamped(total, total_stamp),
            category_generation=category_generation,
            _page_entry=(page_key, page_stamp),
            _total_entry=(total_key, total_stamp),
        )

    def put_search_later(self, lookup: SearchLookup, page: bytes, total: bytes | None) -> None:
        """put_search in a task of its own, so that the caller need not wait for it."""
        if not lookup.cacheable or not self.reachable():
            return
        task = asyncio.ensure_future(self.put_search(lookup, page, total))
        self._puts.add(task)
        task.add_done_callback(self._puts.discard)

    async def put_search(self, lookup: SearchLookup, page: bytes, total: bytes | None) -> None:
        """Stores a loaded page (and total) under the generations the lookup read: one
        round trip. Nothing is stored when the lookup could not read Redis."""
        if lookup._page_entry is None or lookup._total_entry is None or not self.reachable():
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                key, stamp = lookup._page_entry
                pipe.set(key, stamp + page, ex=SEARCH_TTL)
                if total is not None:
                    key, stamp = lookup._total_entry
                    pipe.set(key, stamp + total, ex=SEARCH_TTL)
                await pipe.execute()
        except RedisError as exc:
            self._failed(exc)

    async def category_key(self, name: str) -> str | None:
        generations = await self._generations([CATEGORY])
        return None if generations is None else f"{self.prefix}:category:{generations[0]}:{name}"

    async def get_category(self, key: str | None) -> bytes | None:
        return None if key is None else await self._get(key)

    async def put_category(self, key: str | None, data: bytes) -> None:
        if key is not None:
            await self._set(key, data, CATEGORY_TTL)

    # --- in-process tier -----------------------------------------------------------------

    def get_local(self, key: str) -> object | None:
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put_local(self, key: str, value: object, ttl: float = POPULAR_TTL) -> None:
        self._local[key] = (time.monotonic() + ttl, value)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stamped(value: object, stamp: bytes) -> bytes | None:
    """The data of an entry stamped with the current generations; None for any other."""
    if isinstance(value, bytes) and value.startswith(stamp):
        return value[len(stamp) :]
    return None


@dataclass(frozen=True)
class SearchLookup:
    """What CatalogCache.search_lookup found. The entries are None when Redis is away (the
    search is then neither read from nor stored in the cache)."""

    page: bytes | None
    total: bytes | None
    category_generation: int | None = None
    _page_entry: tuple[str, bytes] | None = None
    _total_entry: tuple[str, bytes] | None = None

    @property
    def cacheable(self) -> bool:
        return self._page_entry is not None

    @property
    def flight_key(self) -> str:
        """One load per page and generations in a process."""
        assert self._page_entry is not None
        key, stamp = self._page_entry
        return f"{key}:{stamp.decode()}"


@dataclass
class _Flight:
    task: asyncio.Future[Any]
    waiters: int = 0
