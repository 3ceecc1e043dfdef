"""Catalog processes under stress: a saturated pool, a writer cut off from Redis, a writer
that dies before invalidating, and an idle catalog's telemetry."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import redis.asyncio as aioredis
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.components import Redis, free_port
from cloudshelf.devstack.stack import Stack, health_status
from tests.conftest import ServiceSpawner, wait_for_health
from tests.factories import book, usd, word
from tests.otlp_receiver import OtlpReceiver

# Nothing listens there: a Redis the process cannot reach.
UNREACHABLE_REDIS = f"redis://127.0.0.1:{free_port()}/0"


def stub(channel: grpc.aio.Channel) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    return catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[return-value]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not after {seconds:.0f} s")


async def set_price(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, book_id: int, minor_units: int
) -> None:
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=book_id, price=usd(minor_units)),
            update_mask=FieldMask(paths=["price"]),
        ),
        timeout=10,
    )


async def test_readiness_holds_while_the_request_pool_is_exhausted(
    spawn_service: ServiceSpawner, stack: Stack
) -> None:
    _, address = spawn_service("catalog", CLOUDSHELF_POSTGRES_POOL_MAX_SIZE="2")
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    await asyncio.sleep(1.0)  # the start-up cache warm-up is done
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    try:
        async with spawn_service.channel(address) as channel:
            catalog = stub(channel)
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("LOCK TABLE book_catalog.books IN ACCESS EXCLUSIVE MODE")
            # Uncached reads: each holds a pool connection, waiting for the lock.
            reads = [
                asyncio.ensure_future(
                    catalog.GetBook(pb.GetBookRequest(id=1_900_000_000 + i), timeout=15)
                )
                for i in range(6)
            ]
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'catalog' "
                "AND application_name = 'catalog' AND wait_event_type = 'Lock'"
            )

            async def pool_exhausted() -> bool:
                return int(await conn.fetchval(waiting)) == 2

            await eventually(pool_exhausted, 5, "both pool connections waiting")
            statuses = []
            for _ in range(12):  # 3 s: six health checks at the test stack's 0.5 s
                statuses.append(await asyncio.to_thread(health_status, address))
                await asyncio.sleep(0.25)
            assert int(await conn.fetchval(waiting)) == 2  # still exhausted throughout
            await transaction.rollback()
            assert set(statuses) == {"SERVING"}, statuses
            for read in reads:
                try:
                    await read
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await conn.close()


async def test_a_partitioned_writers_update_is_not_served_stale_by_another_replica(
    spawn_service: ServiceSpawner,
    channel_to: Callable[[str], grpc.aio.Channel],
    stack: Stack,
) -> None:
    reader = stub(channel_to("catalog"))
    created = (await reader.CreateBook(pb.CreateBookRequest(book=book()))).book
    assert (await reader.GetBook(pb.GetBookRequest(id=created.id))).book.price == created.price

    _, writer_address = spawn_service("catalog", CLOUDSHELF_REDIS_URL=UNREACHABLE_REDIS)
    await asyncio.to_thread(wait_for_health, writer_address, "SERVING")
    async with spawn_service.channel(writer_address) as channel:
        writer = stub(channel)
        await set_price(writer, created.id, 4242)
        # The writer reads its own write (from PostgreSQL while Redis is away).
        shown = (await writer.GetBook(pb.GetBookRequest(id=created.id), timeout=5)).book
        assert shown.price == usd(4242)

    # The writer could not invalidate; the row it committed lets another replica do it.
    async def fresh() -> bool:
        shown = (await reader.GetBook(pb.GetBookRequest(id=created.id))).book
        return shown.price == usd(4242)

    await eventually(fresh, 10, "the reader serves the new price")
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM book_catalog.cache_invalidations WHERE book_id = $1", created.id
        )
        assert left == 0
    finally:
        await conn.close()


async def test_a_dead_writers_invalidations_are_applied_after_a_restart(
    spawn_service: ServiceSpawner, catalog_dsn: str, tmp_path: Path
) -> None:
    redis = Redis(tmp_path, free_port())  # this test's catalog database has its own cache
    redis.start()
    cache = aioredis.Redis.from_url(redis.url)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        first, address = spawn_service(
            "catalog", CLOUDSHELF_POSTGRES_DSN=catalog_dsn, CLOUDSHELF_REDIS_URL=redis.url
        )
        await asyncio.to_thread(wait_for_health, address, "SERVING")
        tag = word()
        async with spawn_service.channel(address) as channel:
            catalog = stub(channel)
            created = (
                await catalog.CreateBook(pb.CreateBookRequest(book=book(title=f"Durable {tag}")))
            ).book
            await catalog.GetBook(pb.GetBookRequest(id=created.id))
            found = await catalog.SearchBooks(pb.SearchBooksRequest(query=tag))
            assert [b.id for b in found.books] == [created.id]
        await asyncio.to_thread(first.stop)
        cached_book = await cache.get(f"catalog:book:{created.id}")
        search_generation = await cache.get("catalog:search:gen")

        # A writer that cannot reach Redis commits, then dies before anyone invalidates.
        writer, address = spawn_service(
            "catalog", CLOUDSHELF_POSTGRES_DSN=catalog_dsn, CLOUDSHELF_REDIS_URL=UNREACHABLE_REDIS
        )
        await asyncio.to_thread(wait_for_health, address, "SERVING")
        async with spawn_service.channel(address) as channel:
            await stub(channel).UpdateBook(
                pb.UpdateBookRequest(
                    book=pb.Book(id=created.id, title=f"Renamed {word()}", price=usd(777)),
                    update_mask=FieldMask(paths=["title", "price"]),
                ),
                timeout=10,
            )
        writer.signal(signal.SIGKILL)
        await asyncio.to_thread(writer.stop)
        pending = "SELECT count(*) FROM book_catalog.cache_invalidations"
        assert await conn.fetchval(pending) >= 2  # the book, and the search generation
        assert await cache.get(f"catalog:book:{created.id}") == cached_book  # stale in Redis
        assert await cache.get("catalog:search:gen") == search_generation

        # Restarted with Redis, the catalog applies what the dead writer left behind.
        _, address = spawn_service(
            "catalog",
            CLOUDSHELF_POSTGRES_DSN=catalog_dsn,
            CLOUDSHELF_REDIS_URL=redis.url,
            CLOUDSHELF_CACHE_INVALIDATION_INTERVAL_SECONDS="0.2",
        )
        await asyncio.to_thread(wait_for_health, address, "SERVING")

        async def applied() -> bool:
            return int(await conn.fetchval(pending)) == 0

        await eventually(applied, 10, "the invalidations applied")
        async with spawn_service.channel(address) as channel:
            catalog = stub(channel)
            shown = (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book
            assert shown.price == usd(777) and shown.title.startswith("Renamed")
            # The search generation moved on: the old title no longer finds the book.
            assert not (await catalog.SearchBooks(pb.SearchBooksRequest(query=tag))).books
    finally:
        await conn.close()
        await cache.aclose()
        redis.stop()


async def test_an_idle_catalog_sends_no_root_spans(
    spawn_service: ServiceSpawner, otlp: OtlpReceiver
) -> None:
    name = f"catalog-idle-{secrets.token_hex(3)}"
    _, address = spawn_service(
        "catalog", OTEL_SERVICE_NAME=name, CLOUDSHELF_CACHE_INVALIDATION_INTERVAL_SECONDS="0.2"
    )
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    await asyncio.sleep(1.5)  # start-up (cache warm-up) is over and exported
    seen = {s.span_id for s in otlp.spans_of_service(name)}
    await asyncio.sleep(3.0)  # health checks, invalidation and outbox polls
    roots = [
        s for s in otlp.spans_of_service(name) if s.span_id not in seen and not s.parent_span_id
    ]
    # Neither health checks, nor the invalidation loop's polls, nor the outbox relay's.
    assert not [(s.name, s.attributes.get("db.statement")) for s in roots]


async def test_peer_health_checks_send_no_spans(
    spawn_service: ServiceSpawner, otlp: OtlpReceiver
) -> None:
    name = f"storefront-idle-{secrets.token_hex(3)}"
    _, address = spawn_service("storefront", OTEL_SERVICE_NAME=name)
    await asyncio.to_thread(wait_for_health, address, "SERVING", "dependency/catalog")
    await asyncio.sleep(3.0)  # its monitor checks cart and catalog every 0.5 s
    assert not otlp.spans_of_service(name)
