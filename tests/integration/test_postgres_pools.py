"""The runtime's PostgreSQL pools: statements planned for their arguments, or planned once."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.stores import open_postgres_with_generic_plans
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub


async def _plan(pool: asyncpg.Pool) -> str:
    """The plan of a prepared statement whose argument decides its outcome."""
    async with pool.acquire() as connection:
        await connection.execute("PREPARE kept(int) AS SELECT 1 WHERE $1 < 0")
        try:
            return str(await connection.fetchval("EXPLAIN (FORMAT JSON) EXECUTE kept(1)"))
        finally:
            await connection.execute("DEALLOCATE kept")


async def test_a_pool_plans_for_the_arguments_the_other_keeps_one_plan(stack: Stack) -> None:
    settings = Settings.from_env("catalog", stack.service_env("catalog"))
    async with AsyncExitStack() as exits:
        pool, generic, postgres = await open_postgres_with_generic_plans(settings, exits)
        await postgres.check()
        assert await pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        assert await generic.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        # Planned for its argument, 1 < 0 is seen false; planned once, it stays a check.
        assert "$1" not in await _plan(pool)
        assert "$1" in await _plan(generic)


async def test_searches_of_few_matches_run_on_the_generic_pool(
    stack: Stack, catalog: CatalogServiceAsyncStub
) -> None:
    tag = word()
    created = await catalog.CreateBook(pb.CreateBookRequest(book=book(title=f"Kept {tag}")))
    response = await catalog.SearchBooks(pb.SearchBooksRequest(query=tag, page_size=5))
    assert [b.id for b in response.books] == [created.book.id]
    connection = await asyncpg.connect(stack.postgres.dsn("catalog"))
    try:
        queries = await connection.fetch(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'catalog-generic'"
        )
    finally:
        await connection.close()
    assert any("websearch_to_tsquery" in row["query"] for row in queries), queries
