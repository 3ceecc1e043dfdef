"""The cart's events from its table's DynamoDB stream (issue 17, items 9, 6 and 10's index):
cart writes through gRPC publish cart.item.* / cart.cleared / inventory.low with the
writing request's trace, ids derived from the stream record, the book-holders index
follows the lines; replicas share the stream by leases, a killed one's shard is taken
over without losing an event, and a replay from an older checkpoint republishes the same
ids. Consumers here are SQS queues subscribed to the bus in the AWS emulator."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aioboto3
import pytest_asyncio
from google.protobuf import json_format

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.config import Settings
from services.cart.provision import provision
from services.cart.tables import book_holders_table_name, stream_leases_table_name
from tests.conftest import ChannelTo, NewUser, ServiceSpawner, wait_for_health
from tests.factories import book, usd
from tests.integration.test_catalog_events import EventTap
from tests.otlp_receiver import OtlpReceiver

CART_SOURCE = "cloudshelf.cart"
Tap = Callable[[dict[str, Any]], Awaitable[EventTap]]


def _session() -> aioboto3.Session:
    return aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )


@pytest_asyncio.fixture
async def cart_tap(stack: Stack) -> AsyncIterator[Tap]:
    """cart_tap(detail) -> a queue that receives the cart's events whose detail matches."""
    bus = stack.settings("cart").event_bus
    async with (
        _session().client("sqs", endpoint_url=stack.aws.url) as sqs,
        _session().client("events", endpoint_url=stack.aws.url) as bridge,
    ):
        made: list[tuple[str, str]] = []

        async def subscribe(detail: dict[str, Any]) -> EventTap:
            name = f"cart-tap-{secrets.token_hex(4)}"
            queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            attributes = await sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["QueueArn"]
            )
            pattern = {"source": [CART_SOURCE], "detail": detail}
            await bridge.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
            await bridge.put_targets(
                Rule=name,
                EventBusName=bus,
                Targets=[{"Id": "tap", "Arn": attributes["Attributes"]["QueueArn"]}],
            )
            made.append((name, queue_url))
            return EventTap(sqs, queue_url)

        yield subscribe
        for name, queue_url in made:
            await bridge.remove_targets(Rule=name, EventBusName=bus, Ids=["tap"])
            await bridge.delete_rule(Name=name, EventBusName=bus)
            await sqs.delete_queue(QueueUrl=queue_url)


async def _book(catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, stock: int = 0) -> int:
    created = (
        await catalog.CreateBook(catalog_pb2.CreateBookRequest(book=book(price=usd(1250))))
    ).book
    if stock != created.stock_quantity:
        adjustment = catalog_pb2.InventoryAdjustment(
            book_id=created.id, delta=stock - created.stock_quantity
        )
        await catalog.AdjustInventory(catalog_pb2.AdjustInventoryRequest(adjustments=[adjustment]))
    return created.id


def _carts(channel: Any) -> cart_pb2_grpc.CartServiceAsyncStub:
    stub: cart_pb2_grpc.CartServiceAsyncStub = cart_pb2_grpc.CartServiceStub(channel)  # type: ignore[assignment]
    return stub


def _add(book_id: int, quantity: int = 1) -> cart_pb2.AddItemRequest:
    return cart_pb2.AddItemRequest(book_id=book_id, quantity=quantity)


async def _until(
    tap: EventTap, done: Callable[[list[dict[str, Any]]], bool], seconds: float = 40
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while not done(tap.received):
        if time.monotonic() > deadline:
            raise AssertionError(f"events not published: {[_logical(e) for e in tap.received]}")
        await tap.drain(1)
    return tap.received


def _logical(event: dict[str, Any]) -> tuple[str, str, int]:
    """What an event is about, whatever its delivery: type, book, cart version."""
    return (event["type"], str(event["data"].get("book_id", "")), int(event["aggregate_version"]))


def _ids_by_logical(events: list[dict[str, Any]]) -> dict[tuple[str, str, int], set[str]]:
    ids: dict[tuple[str, str, int], set[str]] = {}
    for event in events:
        ids.setdefault(_logical(event), set()).add(event["id"])
    return ids


async def _holders(stack: Stack, book_id: int) -> dict[str, int]:
    table = book_holders_table_name(stack.settings("cart").cart_table)
    async with _session().client("dynamodb", endpoint_url=stack.aws.url) as dynamodb:
        answer = await dynamodb.query(
            TableName=table,
            KeyConditionExpression="bookId = :book",
            ExpressionAttributeValues={":book": {"S": str(book_id)}},
            ConsistentRead=True,
        )
    return {item["owner"]["S"]: int(item["expiresAt"]["N"]) for item in answer["Items"]}


async def _wait_holders(
    stack: Stack, book_id: int, expected: set[str], seconds: float = 90
) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while True:
        rows = await _holders(stack, book_id)
        if set(rows) == expected:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"book {book_id} holders {set(rows)}, expected {expected}")
        await asyncio.sleep(0.3)


async def test_cart_writes_publish_their_events_with_the_request_trace(
    stack: Stack,
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    cart_tap: Tap,
    otlp: OtlpReceiver,
) -> None:
    shopper = new_user()
    owner = f"user#{shopper.subject}"
    tap = await cart_tap({"subject": [owner]})
    carts = _carts(channel_to("cart", shopper.token))
    first, second = await _book(catalog), await _book(catalog)
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    added = await carts.AddItem(_add(first), metadata=(("traceparent", traceparent),))
    await carts.AddItem(_add(first, 2))
    await carts.AddItem(_add(second))
    await carts.UpdateItemQuantity(cart_pb2.UpdateItemQuantityRequest(book_id=second, quantity=0))
    await carts.AddItem(_add(second, 4))
    rows = await _wait_holders(stack, second, {owner})
    assert rows[owner] >= added.cart.expire_time.seconds  # never expires before the cart
    await carts.ClearCart(cart_pb2.ClearCartRequest())

    events = await _until(tap, lambda got: any(e["type"] == "cart.cleared" for e in got))
    assert [(e["type"], e["data"].get("book_id")) for e in events] == [
        ("cart.item.added", str(first)),
        ("cart.item.updated", str(first)),
        ("cart.item.added", str(second)),
        ("cart.item.removed", str(second)),
        ("cart.item.added", str(second)),
        ("cart.cleared", None),
    ]
    assert len({e["id"] for e in events}) == len(events)
    versions = [int(e["aggregate_version"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    for event in events:
        assert event["source"] == CART_SOURCE and event["subject"] == owner
        assert event["data"]["owner"] == {"user_id": shopper.subject}
        assert event["data_type"].startswith("cloudshelf.cart.v1.Cart")
        assert event["occurred_at"]
    # The first write's event joins the trace of the request that wrote it.
    assert events[0]["traceparent"].split("-")[1] == trace_id
    assert events[1]["traceparent"] and events[1]["traceparent"].split("-")[1] != trace_id
    added_first = json_format.ParseDict(events[0]["data"], cart_pb2.CartItemAddedEvent())
    assert added_first.quantity == 1 and added_first.unit_price == usd(1250)
    updated = json_format.ParseDict(events[1]["data"], cart_pb2.CartItemUpdatedEvent())
    assert (updated.quantity, updated.previous_quantity) == (3, 1)
    cleared = json_format.ParseDict(events[5]["data"], cart_pb2.CartClearedEvent())
    assert sorted((line.book_id, line.quantity) for line in cleared.removed) == sorted(
        [(first, 3), (second, 4)]
    )
    # The batch that published it is a span of its own, linked to the writing request.
    deadline = time.monotonic() + 10
    while not (batches := otlp.spans_linked_to(trace_id)):
        assert time.monotonic() < deadline, "no stream batch span linked to the request"
        await asyncio.sleep(0.1)
    assert [(s.service_name, s.name, s.parent_span_id) for s in batches] == [
        ("cart", "cart stream batch", "")
    ]
    # The index followed the lines: both rows went with ClearCart.
    await _wait_holders(stack, first, set())
    await _wait_holders(stack, second, set())


async def test_inventory_low_when_a_large_add_leaves_little_stock(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    cart_tap: Tap,
) -> None:
    scarce, plenty = await _book(catalog, stock=10), await _book(catalog, stock=50)
    tap = await cart_tap({"subject": [str(scarce), str(plenty)]})
    carts = _carts(channel_to("cart", new_user().token))
    await carts.AddItem(_add(plenty, 7))  # 43 left
    await carts.AddItem(_add(scarce, 7))  # 3 left, under 5
    await carts.UpdateItemQuantity(cart_pb2.UpdateItemQuantityRequest(book_id=scarce, quantity=8))
    await _until(tap, lambda got: len(got) >= 2)
    events = await tap.drain(3)  # and nothing more
    assert [e["type"] for e in events] == ["inventory.low", "inventory.low"]
    first, second = (json_format.ParseDict(e["data"], cart_pb2.InventoryLowEvent()) for e in events)
    assert (first.book_id, first.stock_quantity, first.threshold, first.cart_quantity) == (
        scarce,
        10,
        5,
        7,
    )
    assert second.cart_quantity == 8
    assert all(e["subject"] == str(scarce) and e["source"] == CART_SOURCE for e in events)


async def _isolated_cart_table(stack: Stack) -> dict[str, str]:
    """A cart table of its own (with its index and lease tables), for replicas spawned
    here: the shared stack's processor does not read its stream."""
    overrides = {
        "CLOUDSHELF_CART_TABLE": f"StreamTest-{secrets.token_hex(4)}",
        "CLOUDSHELF_CART_STREAM_LEASE_SECONDS": "3",
        "CLOUDSHELF_CART_STREAM_POLL_SECONDS": "0.2",
    }
    await provision(Settings.from_env("cart", stack.service_env("cart", overrides)))
    return overrides


async def _lease_rows(stack: Stack, cart_table: str) -> list[dict[str, Any]]:
    async with _session().client("dynamodb", endpoint_url=stack.aws.url) as dynamodb:
        answer = await dynamodb.scan(
            TableName=stream_leases_table_name(cart_table), ConsistentRead=True
        )
    return answer["Items"]  # type: ignore[no-any-return]


async def test_replicas_share_the_stream_survive_a_kill_and_replay_the_same_ids(
    stack: Stack,
    spawn_service: ServiceSpawner,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    cart_tap: Tap,
) -> None:
    overrides = await _isolated_cart_table(stack)
    cart_table = overrides["CLOUDSHELF_CART_TABLE"]
    (first, first_address), (second, second_address) = (
        spawn_service("cart", **overrides),
        spawn_service("cart", **overrides),
    )
    for address in (first_address, second_address):
        await asyncio.to_thread(wait_for_health, address, "SERVING")
    shopper = new_user()
    tap = await cart_tap({"subject": [f"user#{shopper.subject}"]})
    books = [await _book(catalog) for _ in range(8)]
    replicas = {
        first.pid: _carts(spawn_service.channel(first_address, shopper.token)),
        second.pid: _carts(spawn_service.channel(second_address, shopper.token)),
    }
    stubs = list(replicas.values())

    # Two replicas, writes through both: each record is published once (one lease holder).
    for n, book_id in enumerate(books[:4]):
        await stubs[n % 2].AddItem(_add(book_id))
    await _until(tap, lambda got: len(got) >= 4)
    events = list(await tap.drain(2))  # and nothing more
    assert sorted(e["data"]["book_id"] for e in events) == sorted(str(b) for b in books[:4])
    assert len({e["id"] for e in events}) == len(events) == 4, "a record published twice"
    leases = await _lease_rows(stack, cart_table)
    holders = {row["leaseOwner"]["S"] for row in leases if "leaseOwner" in row}
    assert len(leases) == 1 and len(holders) == 1

    # SIGKILL the replica holding the lease; the other takes the shard over once the
    # lease expires and publishes what was written meanwhile, nothing lost.
    holder_pid = int(holders.pop().split("-")[-2])
    killed = first if first.pid == holder_pid else second
    survivor = replicas[second.pid if killed is first else first.pid]
    killed.signal(signal.SIGKILL)
    await survivor.AddItem(_add(books[0], 2))
    await survivor.RemoveItem(cart_pb2.RemoveItemRequest(book_id=books[1]))
    for book_id in books[4:]:
        await survivor.AddItem(_add(book_id))
    await survivor.ClearCart(cart_pb2.ClearCartRequest())
    expected = 4 + 1 + 1 + 4 + 1
    events = await _until(tap, lambda got: len(_ids_by_logical(got)) >= expected, seconds=60)
    by_logical = _ids_by_logical(events)
    assert len(by_logical) == expected, sorted(by_logical)
    assert all(len(ids) == 1 for ids in by_logical.values()), "one event, two ids"
    published = {next(iter(ids)) for ids in by_logical.values()}

    # Rewind: with no replica running, the shard's checkpoint is dropped, and a new replica
    # reads the stream from its start: every event again, with the ids it had.
    spawn_service.stop_all()
    # A replica stopped by SIGTERM gives its lease up (another takes it over at once).
    assert all("leaseOwner" not in row for row in await _lease_rows(stack, cart_table))
    async with _session().client("dynamodb", endpoint_url=stack.aws.url) as dynamodb:
        for row in await _lease_rows(stack, cart_table):
            await dynamodb.delete_item(
                TableName=stream_leases_table_name(cart_table), Key={"shardId": row["shardId"]}
            )
    tap.received.clear()
    _, replay_address = spawn_service("cart", **overrides)
    await asyncio.to_thread(wait_for_health, replay_address, "SERVING")
    replayed = await _until(tap, lambda got: len(got) >= expected, seconds=60)
    assert {e["id"] for e in replayed} == published


async def _checkpoint(stack: Stack, cart_table: str) -> int:
    """The checkpoint of the table's one shard (0: none yet); the shard is leased."""
    (row,) = await _lease_rows(stack, cart_table)
    assert "leaseOwner" in row
    return int(row.get("checkpoint", {"S": "0"})["S"])


async def test_nothing_is_checkpointed_past_an_event_the_bus_did_not_take(
    stack: Stack,
    spawn_service: ServiceSpawner,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
) -> None:
    """A replica whose bus does not exist yet: its events wait (no checkpoint moves) and
    are all published, with their ids, once the bus is there."""
    overrides = await _isolated_cart_table(stack)
    bus = f"late-bus-{secrets.token_hex(4)}"
    _, address = spawn_service("cart", **overrides, CLOUDSHELF_EVENT_BUS=bus)
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    shopper = new_user()
    carts = _carts(spawn_service.channel(address, shopper.token))
    books = [await _book(catalog) for _ in range(3)]
    for book_id in books:
        await carts.AddItem(_add(book_id))
    # While the bus fails the checkpoint stays before the first record with an event (moto
    # streams an UpdateItem that creates an item as two INSERTs, the first with the keys
    # alone and no event: that one may be passed).
    table = overrides["CLOUDSHELF_CART_TABLE"]
    await asyncio.sleep(3)
    stuck_at = await _checkpoint(stack, table)
    await asyncio.sleep(3)
    assert await _checkpoint(stack, table) == stuck_at

    async with (
        _session().client("sqs", endpoint_url=stack.aws.url) as sqs,
        _session().client("events", endpoint_url=stack.aws.url) as bridge,
    ):
        await bridge.create_event_bus(Name=bus)
        queue_url = (await sqs.create_queue(QueueName=bus))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        await bridge.put_rule(
            Name=bus, EventBusName=bus, EventPattern=json.dumps({"source": [CART_SOURCE]})
        )
        await bridge.put_targets(
            Rule=bus,
            EventBusName=bus,
            Targets=[{"Id": "tap", "Arn": attributes["Attributes"]["QueueArn"]}],
        )
        try:
            tap = EventTap(sqs, queue_url)
            # The loop backs off up to 30 s while the bus fails.
            events = await _until(tap, lambda got: len(got) >= 3, seconds=60)
            assert sorted(e["data"]["book_id"] for e in events) == sorted(str(b) for b in books)
            deadline = time.monotonic() + 10
            while await _checkpoint(stack, table) <= stuck_at:
                assert time.monotonic() < deadline, "the checkpoint did not move on"
                await asyncio.sleep(0.3)
        finally:
            await bridge.remove_targets(Rule=bus, EventBusName=bus, Ids=["tap"])
            await bridge.delete_rule(Name=bus, EventBusName=bus)
            await bridge.delete_event_bus(Name=bus)
            await sqs.delete_queue(QueueUrl=queue_url)
