"""Catalog jobs: refresh the popular-books view, warm the cache, fold the spelling counts.

Run from the CLI (`cloudshelf job refresh-popular`, `cloudshelf job warm-cache`), from a
CronJob in a cluster, and (warm-up) once by the service itself when it starts. Pruning
request_id keys is every PostgreSQL service's job: `cloudshelf job prune-idempotency-keys
--service NAME` (cloudshelf/cli.py).
"""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack

import asyncpg

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.stores import open_postgres, open_redis
from services.catalog.books import BookStore
from services.catalog.cache import CatalogCache
from services.catalog.popular import refresh_popular_books
from services.catalog.spelling import fold_spelling_changes
from services.catalog.taxonomy import TaxonomyStore

log = logging.getLogger(__name__)

WARM_BOOKS = 500


async def warm_cache(
    pool: asyncpg.Pool, cache: CatalogCache, books: int = WARM_BOOKS
) -> dict[str, int]:
    """Loads the best sellers and every category subtree into Redis."""
    ids = [
        row["id"]
        for row in await pool.fetch(
            "SELECT id FROM book_catalog.books WHERE status = 'active' "
            "ORDER BY purchase_count DESC, id LIMIT $1",
            books,
        )
    ]
    loaded = await BookStore(pool).get_many_versioned(ids)
    await cache.put_books({i: (v, b.SerializeToString()) for i, (b, v) in loaded.items()})
    taxonomy = TaxonomyStore(pool)
    category_ids = [row["id"] for row in await pool.fetch("SELECT id FROM book_catalog.categories")]
    for category_id in category_ids:
        key = await cache.category_key(f"subtree:{category_id}")
        subtree = await taxonomy.category_and_descendants(category_id)
        await cache.put_category(key, json.dumps(subtree).encode())
    return {"books": len(loaded), "categories": len(category_ids)}


async def run_warm_cache(settings: Settings) -> str:
    async with AsyncExitStack() as stack:
        pool, _ = await open_postgres(settings, stack)
        client, _ = await open_redis(settings, stack, required=True)
        counts = await warm_cache(pool, CatalogCache(client))
    return f"cache warmed: {counts['books']} books, {counts['categories']} category subtrees"


async def run_refresh_popular(settings: Settings) -> str:
    async with AsyncExitStack() as stack:
        pool, _ = await open_postgres(settings, stack)
        await refresh_popular_books(pool)
        count = await pool.fetchval("SELECT count(*) FROM book_catalog.popular_books")
    return f"popular_books refreshed: {count} books ranked"


async def run_fold_spelling(settings: Settings) -> str:
    async with AsyncExitStack() as stack:
        pool, _ = await open_postgres(settings, stack)
        folded = await fold_spelling_changes(pool)
    return f"spelling lexicon: {folded} lexeme counts folded in"
