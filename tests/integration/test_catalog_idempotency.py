"""AdjustInventory's request_id (AIP-155): a retry is applied once and answered with the first
response, byte for byte; a reused id with another request, or an id that is not a UUID, is
refused; a failed attempt leaves no key; a concurrent retry waits for the first attempt;
expired keys are pruned by the job."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest_asyncio

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.idempotency import (
    IdempotentCall,
    PostgresIdempotencyKeys,
    prune_expired_keys,
)
from tests.conftest import expect_error, run_cli
from tests.error_details import details_of_error
from tests.integration.test_catalog_reviews_inventory import adjust, create

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

METHOD = "/cloudshelf.catalog.v1.CatalogService/AdjustInventory"
KEYS = "book_catalog.idempotency_keys"
REUSED = "request_id reused with a different request"


# AdjustInventory answering with the response bytes as they came over the wire.
RawAdjust = Callable[[pb.AdjustInventoryRequest], Awaitable[bytes]]


@pytest_asyncio.fixture
async def adjust_raw(channel_to: Callable[[str], grpc.aio.Channel]) -> RawAdjust:
    # No response_deserializer: the call answers with the raw bytes.
    call: RawAdjust = channel_to("catalog").unary_unary(
        METHOD, request_serializer=pb.AdjustInventoryRequest.SerializeToString
    )
    return call


@pytest_asyncio.fixture
async def catalog_db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the shared stack's catalog database (the one the service uses)."""
    conn = await asyncpg.connect(stack.settings("catalog").postgres_dsn)
    yield conn
    await conn.close()


async def stock_of(catalog: CatalogServiceAsyncStub, book_id: int) -> int:
    return (await catalog.GetBook(pb.GetBookRequest(id=book_id))).book.stock_quantity


def levels(raw: bytes) -> list[tuple[int, int]]:
    response = pb.AdjustInventoryResponse.FromString(raw)
    return [(s.book_id, s.stock_quantity) for s in response.stock_levels]


async def test_a_retry_gets_the_first_response_byte_for_byte_and_applies_once(
    catalog: CatalogServiceAsyncStub, adjust_raw: RawAdjust
) -> None:
    a, b = await create(catalog), await create(catalog)
    request = adjust((a.id, 10), (b.id, 4), request_id=str(uuid.uuid4()))
    first = await adjust_raw(request)
    assert levels(first) == [(a.id, 10), (b.id, 4)]
    # Someone else changes the stock; the retry still gets the first answer, unchanged.
    await catalog.AdjustInventory(adjust((a.id, 3)))
    assert await adjust_raw(request) == first
    # The same key written in capitals is the same key.
    shouting = adjust((a.id, 10), (b.id, 4), request_id=request.request_id.upper())
    assert await adjust_raw(shouting) == first
    assert (await stock_of(catalog, a.id), await stock_of(catalog, b.id)) == (13, 4)


async def test_a_request_id_reused_with_a_different_request_is_refused(
    catalog: CatalogServiceAsyncStub,
) -> None:
    a = await create(catalog)
    key = str(uuid.uuid4())
    await catalog.AdjustInventory(adjust((a.id, 5), request_id=key))
    details = await expect_error(
        catalog.AdjustInventory(adjust((a.id, 100), request_id=key)),
        grpc.StatusCode.FAILED_PRECONDITION,
        REUSED,
    )
    assert "new request_id" in details
    try:
        await catalog.AdjustInventory(adjust((a.id, 100), request_id=key))
        raise AssertionError("a reused request_id was accepted")
    except grpc.aio.AioRpcError as exc:
        info = details_of_error(exc).error_info
        assert info is not None and info.reason == "REQUEST_ID_REUSED"
    await expect_error(
        catalog.AdjustInventory(adjust((a.id, -5), purchase=True, request_id=key)),
        grpc.StatusCode.FAILED_PRECONDITION,
        REUSED,
    )
    assert await stock_of(catalog, a.id) == 5
    # The key is this RPC's and this caller's, not the book's: a new one works at once.
    await catalog.AdjustInventory(adjust((a.id, 100), request_id=str(uuid.uuid4())))
    assert await stock_of(catalog, a.id) == 105


async def test_a_request_id_must_be_a_uuid(catalog: CatalogServiceAsyncStub) -> None:
    a = await create(catalog)
    for bad in ("req-1", "order 42", "00000000-0000-0000-0000-000000000000", "x" * 101):
        await expect_error(
            catalog.AdjustInventory(adjust((a.id, 1), request_id=bad)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id",
        )
    assert await stock_of(catalog, a.id) == 0


async def test_a_failed_attempt_leaves_no_key_so_it_can_be_retried(
    catalog: CatalogServiceAsyncStub, adjust_raw: RawAdjust
) -> None:
    a = await create(catalog)
    await catalog.AdjustInventory(adjust((a.id, 3)))
    key = str(uuid.uuid4())
    try:
        await catalog.AdjustInventory(adjust((a.id, -5), purchase=True, request_id=key))
        raise AssertionError("an oversell was accepted")
    except grpc.aio.AioRpcError as exc:
        refused = details_of_error(exc)
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and f"book {a.id}" in refused.message
    assert refused.error_info is not None
    assert refused.error_info.reason == "INSUFFICIENT_STOCK"
    assert refused.error_info.metadata["book_id"] == str(a.id)
    # AIP-155 keeps only successful requests: the same id runs again once the cause is
    # fixed (here a restock), and is then held like any other.
    await catalog.AdjustInventory(adjust((a.id, 7)))
    retry = adjust((a.id, -5), purchase=True, request_id=key)
    answered = await adjust_raw(retry)
    assert levels(answered) == [(a.id, 5)]
    assert await adjust_raw(retry) == answered
    assert (await catalog.GetBook(pb.GetBookRequest(id=a.id))).book.purchase_count == 5
    await expect_error(
        catalog.AdjustInventory(adjust((a.id, -3), purchase=True, request_id=key)),
        grpc.StatusCode.FAILED_PRECONDITION,
        REUSED,
    )


async def _waiting_on(db: asyncpg.Connection) -> tuple[int, int]:
    """(attempts waiting on an idempotency key, attempts waiting on a book row)."""
    await db.execute("SELECT pg_stat_clear_snapshot()")  # else one snapshot per transaction
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE query LIKE '%idempotency_keys%') AS on_key, "
        "       count(*) FILTER (WHERE query LIKE '%FROM book_catalog.books%FOR UPDATE%') "
        "         AS on_book "
        "FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    assert row is not None
    return int(row["on_key"]), int(row["on_book"])


async def test_concurrent_attempts_with_one_key_apply_once_and_agree(
    catalog: CatalogServiceAsyncStub,
    adjust_raw: RawAdjust,
    catalog_db: asyncpg.Connection,
    stack: Stack,
) -> None:
    a = await create(catalog)
    request = adjust((a.id, 6), request_id=str(uuid.uuid4()))
    # Hold the book's row so that the first attempt stays inside its transaction, key
    # taken, while the second arrives: the second must wait on the key, not run beside it.
    holder = await asyncpg.connect(stack.settings("catalog").postgres_dsn)
    lock = holder.transaction()
    await lock.start()
    await holder.execute("SELECT 1 FROM book_catalog.books WHERE id = $1 FOR UPDATE", a.id)
    attempts = [asyncio.ensure_future(adjust_raw(request)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 20
        while (waiting := await _waiting_on(catalog_db)) != (1, 1):
            assert time.monotonic() < deadline, f"(on the key, on the book): {waiting}"
            await asyncio.sleep(0.05)
        assert not any(attempt.done() for attempt in attempts)
    finally:
        await lock.rollback()
        await holder.close()
    first, second = await asyncio.gather(*attempts)
    assert first == second
    assert levels(first) == [(a.id, 6)]
    assert await stock_of(catalog, a.id) == 6


async def test_expired_keys_count_as_absent_and_the_job_prunes_them(
    catalog: CatalogServiceAsyncStub, stack: Stack, catalog_db: asyncpg.Connection
) -> None:
    a = await create(catalog)
    reused, pruned, live = (str(uuid.uuid4()) for _ in range(3))
    for key in (reused, pruned, live):
        await catalog.AdjustInventory(adjust((a.id, 1), request_id=key))
    await catalog_db.execute(
        f"UPDATE {KEYS} SET expires_at = now() - interval '1 second' WHERE key = ANY($1::uuid[])",
        [reused, pruned],
    )
    # Expired but not pruned yet: the key is free again, for any request.
    await catalog.AdjustInventory(adjust((a.id, 10), request_id=reused))
    assert await stock_of(catalog, a.id) == 13

    job = await run_cli(stack, "job", "prune-idempotency-keys")
    assert job.returncode == 0, job.stderr
    assert "idempotency keys pruned:" in job.stdout
    assert int(job.stdout.split("pruned:")[1].split()[0]) >= 1
    left = {
        str(row["key"])
        for row in await catalog_db.fetch(
            f"SELECT key FROM {KEYS} WHERE key = ANY($1::uuid[])", [reused, pruned, live]
        )
    }
    assert left == {reused, live}
    # Pruned: the id is new again (and is applied); the live one still answers from its key.
    await catalog.AdjustInventory(adjust((a.id, 2), request_id=pruned))
    await catalog.AdjustInventory(adjust((a.id, 1), request_id=live))
    assert await stock_of(catalog, a.id) == 15


async def test_pruning_works_through_every_batch(catalog_dsn: str) -> None:
    """The runtime's prune on a fresh catalog database: batches until none is left."""
    pool = await asyncpg.create_pool(catalog_dsn, min_size=1, max_size=2)
    keys = PostgresIdempotencyKeys(KEYS)
    calls = [IdempotentCall("test", uuid.uuid4(), bytes([n]) * 32) for n in range(7)]
    try:
        async with pool.acquire() as conn:
            for call in calls:
                async with conn.transaction():
                    assert await keys.claim(conn, call) is None
                    await keys.complete(conn, call, pb.AdjustInventoryResponse())
            await conn.execute(
                f"UPDATE {KEYS} SET expires_at = now() - interval '1 day' "
                "WHERE key = ANY($1::uuid[])",
                [call.key for call in calls[:5]],
            )
        assert await prune_expired_keys(pool, KEYS, batch=2) == 5
        assert await prune_expired_keys(pool, KEYS, batch=2) == 0
        remaining = {row["key"] for row in await pool.fetch(f"SELECT key FROM {KEYS}")}
        assert remaining == {call.key for call in calls[5:]}
    finally:
        await pool.close()
