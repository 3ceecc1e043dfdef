"""The cart store counts the writes a concurrent write made it run again
(`cloudshelf.cart.write_conflicts`, by rpc), on the stack's DynamoDB emulator.

The conflict is forced, not hoped for: the store's client is the real one, except that
right after the store reads the cart, another writer (a second store on the same table,
as another replica would be) writes to it. The first store's condition (no cart yet;
with a request_id, the version it read) then fails once, and its second attempt, planned
from the cart as the other writer left it, keeps both writes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.errors import Unauthenticated
from cloudshelf.runtime.idempotency import DynamoDBIdempotencyKeys, IdempotentCall
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.cart.store import (
    SESSION_SIGNED_IN,
    WRITE_CONFLICTS_METRIC,
    BookSnapshot,
    CartStore,
    user_owner_key,
)
from services.cart.tables import MERGED_INTO, request_ids_table_name

BOOK = BookSnapshot(book_id=41, title="Racing", price_minor=1500, currency="USD", stock=10)


class _WriterAfterRead:
    """The real DynamoDB client; after its first read of `table`, `then()` runs once."""

    def __init__(self, client: Any, table: str, then: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._table = table
        self._then: Callable[[], Awaitable[None]] | None = then

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get_item(self, **kwargs: Any) -> Any:
        answer = await self._client.get_item(**kwargs)
        if kwargs["TableName"] == self._table and self._then is not None:
            then, self._then = self._then, None
            await then()
        return answer


@pytest_asyncio.fixture
async def dynamodb(stack: Stack) -> AsyncIterator[Any]:
    settings = stack.settings("cart")
    async with AsyncExitStack() as exits:
        yield await open_aws_client(aws_session(settings), exits, "dynamodb", settings)


def _conflicts(reader: InMemoryMetricReader) -> dict[tuple[tuple[str, Any], ...], int]:
    data = reader.get_metrics_data()
    counted: dict[tuple[tuple[str, Any], ...], int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == WRITE_CONFLICTS_METRIC:
                    for point in metric.data.data_points:
                        counted[tuple(sorted((point.attributes or {}).items()))] = int(point.value)  # type: ignore[union-attr]
    return counted


async def test_a_write_that_loses_a_race_is_retried_and_counted(
    stack: Stack, dynamodb: Any
) -> None:
    table = stack.settings("cart").cart_table
    keys = DynamoDBIdempotencyKeys(dynamodb, request_ids_table_name(table))
    subject = f"conflict-{uuid.uuid4()}"
    owner, key = cart_pb2.CartOwner(user_id=subject), user_owner_key(subject)
    other_replica = CartStore(dynamodb, table, keys, meter_provider=MeterProvider())

    async def concurrent_add() -> None:
        await other_replica.add_item(owner, key, BOOK, 2, etag="", call=None)

    reader = InMemoryMetricReader()
    store = CartStore(
        _WriterAfterRead(dynamodb, table, concurrent_add),
        table,
        keys,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    assert _conflicts(reader) == {}

    answer = await store.add_item(owner, key, BOOK, 3, etag="", call=None)

    # Both adds landed: the losing write was run again, not lost.
    assert [(line.book_id, line.quantity) for line in answer.cart.items] == [(41, 5)]
    assert _conflicts(reader) == {(("rpc", "AddItem"),): 1}
    # A write that meets no concurrent writer is not counted.
    await store.add_item(owner, key, BOOK, 1, etag="", call=None)
    assert _conflicts(reader) == {(("rpc", "AddItem"),): 1}


async def test_a_write_with_a_request_id_that_loses_a_race_is_retried_and_counted(
    stack: Stack, dynamodb: Any
) -> None:
    table = stack.settings("cart").cart_table
    keys = DynamoDBIdempotencyKeys(dynamodb, request_ids_table_name(table))
    subject = f"conflict-{uuid.uuid4()}"
    owner, key = cart_pb2.CartOwner(user_id=subject), user_owner_key(subject)
    other_replica = CartStore(dynamodb, table, keys, meter_provider=MeterProvider())
    await other_replica.add_item(owner, key, BOOK, 1, etag="", call=None)
    other_book = BookSnapshot(book_id=42, title="Other", price_minor=700, currency="USD", stock=0)

    async def concurrent_add() -> None:
        await other_replica.add_item(owner, key, other_book, 1, etag="", call=None)

    reader = InMemoryMetricReader()
    store = CartStore(
        _WriterAfterRead(dynamodb, table, concurrent_add),
        table,
        keys,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    call = IdempotentCall("test|cart.UpdateItemQuantity", uuid.uuid4(), b"request")

    answer = await store.set_quantity(owner, key, BOOK.book_id, 4, etag="", call=call)

    # Conditioned on the version it read, the write lost to the concurrent add once; its
    # second attempt kept that add.
    assert {line.book_id: line.quantity for line in answer.cart.items} == {41: 4, 42: 1}
    assert _conflicts(reader) == {(("rpc", "UpdateItemQuantity"),): 1}
    # The retried request id answers with the first outcome, and counts nothing.
    assert await store.set_quantity(owner, key, BOOK.book_id, 4, etag="", call=call) == answer
    assert _conflicts(reader) == {(("rpc", "UpdateItemQuantity"),): 1}


async def _no_binding(now: int) -> None:
    """The session's binding, left out: these tests race the carts alone."""
    return None


async def test_a_write_to_a_session_cart_merged_meanwhile_is_refused_not_orphaned(
    stack: Stack, dynamodb: Any
) -> None:
    """A write let in as the anonymous session (its owner resolved, its cart read) while the
    session is signed in and its cart merged must not make a cart that nobody will merge:
    it is refused as it would have been a moment later (the caller needs the user's
    token), whether the session had a cart or not."""
    table = stack.settings("cart").cart_table
    keys = DynamoDBIdempotencyKeys(dynamodb, request_ids_table_name(table))
    merger = CartStore(dynamodb, table, keys, meter_provider=MeterProvider())
    other_book = BookSnapshot(book_id=42, title="Other", price_minor=700, currency="USD", stock=9)

    for had_a_cart in (False, True):
        session_id, subject = uuid.uuid4().hex, f"racer-{uuid.uuid4()}"
        session, session_key = cart_pb2.CartOwner(session_id=session_id), f"session#{session_id}"
        if had_a_cart:
            await merger.add_item(session, session_key, BOOK, 2, etag="", call=None)

        async def sign_in(subject: str = subject, session_id: str = session_id) -> None:
            await merger.merge(
                cart_pb2.CartOwner(user_id=subject),
                user_owner_key(subject),
                session_id,
                _no_binding,
                etag="",
                call=None,
            )

        store = CartStore(
            _WriterAfterRead(dynamodb, table, sign_in), table, keys, meter_provider=MeterProvider()
        )
        with pytest.raises(Unauthenticated) as refused:
            await store.add_item(session, session_key, other_book, 1, etag="", call=None)
        assert refused.value.reason == SESSION_SIGNED_IN

        user_cart = await merger.get(cart_pb2.CartOwner(user_id=subject), user_owner_key(subject))
        assert [(line.book_id, line.quantity) for line in user_cart.items] == (
            [(BOOK.book_id, 2)] if had_a_cart else []
        )
        # No anonymous cart left behind; a retried merge writes nothing and keeps it so.
        assert not (await merger.get(session, session_key)).items
        await sign_in()
        assert not (await merger.get(session, session_key)).items


async def test_an_expired_tombstone_reads_as_no_cart_and_a_new_cart_replaces_it(
    stack: Stack, dynamodb: Any
) -> None:
    table = stack.settings("cart").cart_table
    keys = DynamoDBIdempotencyKeys(dynamodb, request_ids_table_name(table))
    store = CartStore(dynamodb, table, keys, meter_provider=MeterProvider())
    session_id = uuid.uuid4().hex
    session, session_key = cart_pb2.CartOwner(session_id=session_id), f"session#{session_id}"
    await dynamodb.put_item(
        TableName=table,
        Item={
            "userId": {"S": session_key},
            "cartId": {"S": "current"},
            MERGED_INTO: {"S": "user#someone"},
            "version": {"N": "3"},
            "expiresAt": {"N": "1"},  # long gone, not yet deleted by TTL
        },
    )
    answer = await store.add_item(session, session_key, BOOK, 1, etag="", call=None)
    assert [(line.book_id, line.quantity) for line in answer.cart.items] == [(BOOK.book_id, 1)]
    stored = await dynamodb.get_item(
        TableName=table, Key={"userId": {"S": session_key}, "cartId": {"S": "current"}}
    )
    assert MERGED_INTO not in stored["Item"]
