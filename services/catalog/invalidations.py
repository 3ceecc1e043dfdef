"""Durable cache invalidation: rows of `book_catalog.cache_invalidations` to Redis.

Triggers write the rows in the transaction of every write that changes a cached value
(migration 202511103). Two ways apply them:
- the writer, right after its commit (`apply_latest`): it applies the newest rows, its own
  among them, and deletes them; if Redis is away, the rows stay;
- the loop of every replica (`run`): it claims (locks) rows that their writer left behind
  for more than a moment (Redis was unreachable from the writer, or the writer died after commit),
  applies them and deletes them. A restart, or another replica, finishes the job.

Applying a row twice is harmless (a marker of the same version, one more generation), so
the writer does not wait for claims, and a row is deleted only after it was applied.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from services.catalog.cache import CatalogCache, Invalidation

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

TABLE = "book_catalog.cache_invalidations"
# Rows per round; a writer's own rows are among the newest.
BATCH = 1000
# The loop leaves fresh rows to their writer for this long, so the two rarely both apply.
WRITER_GRACE_SECONDS = 1.0

_COLUMNS = "id, book_id, book_version, old_slug, generation"
_LATEST = f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY id DESC LIMIT $1"
_LEFT_BEHIND = "created_at <= now() - make_interval(secs => $1)"
_ANY_LEFT_BEHIND = f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE {_LEFT_BEHIND})"
# Claimed by row locks for the round (a Redis pipeline): a replica that dies mid-round
# releases them with its connection, and other replicas skip them meanwhile.
_CLAIM = f"""
SELECT {_COLUMNS} FROM {TABLE} WHERE {_LEFT_BEHIND}
 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"""
_DELETE = f"DELETE FROM {TABLE} WHERE id = ANY($1::bigint[])"


class CacheInvalidations:
    def __init__(self, pool: asyncpg.Pool, cache: CatalogCache, interval: float = 1.0) -> None:
        self.pool = pool
        self.cache = cache
        self.interval = interval

    async def apply_latest(self) -> None:
        """Called by a writer after its commit. Never raises: the write is committed, and
        rows it cannot apply now are applied by the loop."""
        try:
            rows = await self.pool.fetch(_LATEST, BATCH)
            if not rows:
                return
            invalidation = Invalidation.of_rows(rows)
            if await self.cache.apply(invalidation):
                await self.pool.execute(_DELETE, invalidation.row_ids)
        except Exception as exc:  # committed already: the loop finishes the job
            log.warning("cache invalidation after commit deferred to the loop: %s", exc)

    async def apply_left_behind(self) -> int:
        """One round of the loop; returns the number of rows applied."""
        if not self.cache.reachable():
            return 0
        grace = 0.0 if self.cache.behind else WRITER_GRACE_SECONDS
        # Nothing to do is the usual case: an idle poll is not worth a trace.
        with suppress_instrumentation():
            if not await self.pool.fetchval(_ANY_LEFT_BEHIND, grace):
                await self.cache.caught_up()
                return 0
        with tracer.start_as_current_span("catalog.cache.apply_invalidations") as span:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_CLAIM, grace, BATCH)
                span.set_attribute("cache.invalidations", len(rows))
                if not rows:
                    return 0
                invalidation = Invalidation.of_rows(rows)
                if not await self.cache.apply(invalidation):
                    return 0
                await conn.execute(_DELETE, invalidation.row_ids)
        log.info("applied %d cache invalidations left by their writer", len(rows))
        return len(rows)

    async def run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                while await self.apply_left_behind() >= BATCH:
                    pass
                failing = False
            except Exception as exc:  # PostgreSQL away: health reports it; try again later
                if not failing:
                    log.warning("cache invalidation loop: %s", exc)
                failing = True
