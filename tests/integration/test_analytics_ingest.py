"""Analytics ingest (issue 19 item 1) through gRPC against the real stack: RecordInteractions
and RecordOrder put envelopes into the Kinesis stream, and the bus forwarder carries the
other contexts' domain events there. Records are read back from the stack's emulator with
GetRecords, as the consumer worker reads them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aioboto3
import asyncpg
import grpc
import pyarrow.compute as pc
import pytest
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from cloudshelf.analytics.v1 import analytics_pb2 as pb
from cloudshelf.analytics.v1 import analytics_pb2_grpc
from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.devstack.stack import Stack, health_status
from cloudshelf.runtime.queues import OUTCOME
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from services.analytics.forwarder import events_queue
from services.analytics.ingest import ORDER_EVENT_NAMESPACE, order_event_id
from tests.conftest import ChannelTo, NewUser, expect_error
from tests.error_details import details_of_error
from tests.factories import book, usd, word
from tests.integration.test_analytics_sinks import emulator_records, lake_dataset
from tests.otlp_receiver import OtlpReceiver

if TYPE_CHECKING:
    from cloudshelf.analytics.v1.analytics_pb2_grpc import (
        AnalyticsServiceAsyncStub as Analytics,
    )

pytestmark = pytest.mark.integration

Code = grpc.StatusCode
SPAN_KIND_CONSUMER = 5


@pytest_asyncio.fixture
async def aws(stack: Stack) -> AsyncIterator[Callable[[str], Any]]:
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    clients: dict[str, Any] = {}
    contexts: list[Any] = []

    def client(name: str) -> Any:
        return clients[name]

    for name in ("kinesis", "sqs", "events"):
        context = session.client(name, endpoint_url=stack.aws.url)
        contexts.append(context)
        clients[name] = await context.__aenter__()
    yield client
    for context in contexts:
        await context.__aexit__(None, None, None)


@pytest_asyncio.fixture
async def ingest(channel_to: ChannelTo, service_token: str) -> Analytics:
    """The analytics service as a service identity (who records interactions)."""
    return analytics_pb2_grpc.AnalyticsServiceStub(channel_to("analytics", token=service_token))  # type: ignore[return-value]


@dataclass
class StreamTail:
    """What has been read of the stream so far, and where each shard's reading stands:
    each poll reads only what is new (re-reading the whole stream every poll would load
    the emulator that the other services share)."""

    iterators: dict[str, str] = field(default_factory=dict)
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


_TAILS: dict[str, StreamTail] = {}


async def read_stream(stack: Stack, kinesis: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every record of the stream so far, (partition key, envelope), read from each shard's
    start as a new consumer would."""
    stream = stack.settings("analytics").analytics_stream
    tail = _TAILS.setdefault(f"{stack.aws.url}/{stream}", StreamTail())
    for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
        iterator = tail.iterators.get(shard["ShardId"])
        if iterator is None:
            answer = await kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
            iterator = answer["ShardIterator"]
        while True:
            answer = await kinesis.get_records(ShardIterator=iterator, Limit=10000)
            iterator = answer["NextShardIterator"]
            for record in answer["Records"]:
                # Other tests put malformed records on purpose (the consumer's dead letters).
                try:
                    envelope = json.loads(record["Data"])
                except ValueError:
                    continue
                if isinstance(envelope, dict) and isinstance(envelope.get("data", {}), dict):
                    tail.records.append((record["PartitionKey"], envelope))
            if not answer["Records"]:
                break
        tail.iterators[shard["ShardId"]] = iterator
    return list(tail.records)


async def wait_for_records(
    stack: Stack, kinesis: Any, wanted: Callable[[dict[str, Any]], bool], count: int
) -> list[tuple[str, dict[str, Any]]]:
    """The stream's records whose envelope is `wanted`, once there are `count` of them."""
    deadline = time.monotonic() + 30
    while True:
        found = [(key, e) for key, e in await read_stream(stack, kinesis) if wanted(e)]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} of {count} events reached the stream"
            return found
        await asyncio.sleep(0.3)


Records = Callable[[Collection[str]], Any]


@pytest_asyncio.fixture
async def stream_records(stack: Stack, aws: Callable[[str], Any]) -> Records:
    """stream_records(ids) -> {envelope id: (partition key, envelope)} once every id is in
    the stream."""

    async def read(ids: Collection[str]) -> dict[str, tuple[str, Any]]:
        wanted = set(ids)
        found = await wait_for_records(
            stack, aws("kinesis"), lambda e: e.get("id") in wanted, len(wanted)
        )
        return {envelope["id"]: (key, envelope) for key, envelope in found}

    return read


def ts(instant: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(instant)
    return message


def interaction(**fields: Any) -> pb.Interaction:
    defaults: dict[str, Any] = {
        "interaction_id": str(uuid.uuid4()),
        "book_id": 42,
        "user_id": f"user-{secrets.token_hex(4)}",
        "session_id": f"session-{secrets.token_hex(4)}",
        "type": pb.INTERACTION_TYPE_VIEW,
        "time": ts(datetime.now(UTC).replace(microsecond=0)),
        "page_view_duration_seconds": 12,
        "came_from": "search",
        "device_type": "mobile",
        "user_location": "Lisbon",
    }
    defaults.update(fields)
    return pb.Interaction(**defaults)


def order(**fields: Any) -> pb.Order:
    defaults: dict[str, Any] = {
        "order_id": str(uuid.uuid4()),
        "user_id": f"user-{secrets.token_hex(4)}",
        "session_id": f"session-{secrets.token_hex(4)}",
        "order_time": ts(datetime.now(UTC).replace(microsecond=0)),
        "total_amount": usd(4200),
        "total_items": 2,
        "tax_amount": usd(300),
        "shipping_cost": usd(0),
        "payment_method": pb.PAYMENT_METHOD_CARD,
        "order_status": pb.ORDER_STATUS_PLACED,
    }
    defaults.update(fields)
    return pb.Order(**defaults)


# --- RecordInteractions ---------------------------------------------------------------------


async def test_interactions_land_in_the_stream_as_envelopes(
    ingest: Analytics, stream_records: Records
) -> None:
    anonymous = interaction(user_id="", type=pb.INTERACTION_TYPE_ADD_TO_CART, value=usd(1999))
    review = interaction(type=pb.INTERACTION_TYPE_REVIEW, rating=4, book_id=7)
    view = interaction()
    trace_id = secrets.token_hex(16)
    answer = await ingest.RecordInteractions(
        pb.RecordInteractionsRequest(interactions=[view, anonymous, review]),
        metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
        timeout=10,
    )
    assert answer.accepted_count == 3
    found = await stream_records(
        [view.interaction_id, anonymous.interaction_id, review.interaction_id]
    )
    # The partition key: the user, else the session.
    assert found[view.interaction_id][0] == view.user_id
    assert found[anonymous.interaction_id][0] == anonymous.session_id
    envelope = found[review.interaction_id][1]
    assert envelope["type"] == "interaction.recorded"
    assert envelope["source"] == "cloudshelf.analytics"
    assert envelope["subject"] == "7"
    assert envelope["data_type"] == "cloudshelf.analytics.v1.Interaction"
    assert envelope["occurred_at"] == review.time.ToJsonString()
    assert envelope["data"]["rating"] == 4
    assert envelope["data"]["type"] == "INTERACTION_TYPE_REVIEW"
    assert envelope["data"]["interaction_id"] == review.interaction_id
    # The call's trace goes on with the record.
    assert envelope["traceparent"].split("-")[1] == trace_id
    cart_add = found[anonymous.interaction_id][1]["data"]
    assert cart_add["value"] == {"minor_units": "1999", "currency_code": "USD"}


async def test_invalid_interactions_refuse_the_whole_batch_naming_each_field(
    ingest: Analytics,
) -> None:
    good = interaction()
    batch = [
        good,
        interaction(interaction_id="not-a-uuid"),
        interaction(book_id=0, type=pb.INTERACTION_TYPE_UNSPECIFIED),
        interaction(type=pb.INTERACTION_TYPE_REVIEW, rating=0),
        interaction(user_id="", session_id=""),
        interaction(value=common_pb2.Money(minor_units=-1, currency_code="XXX")),
        interaction(came_from="x" * 201, page_view_duration_seconds=-1),
    ]
    batch[1].ClearField("time")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.RecordInteractions(pb.RecordInteractionsRequest(interactions=batch))
    details = details_of_error(refused.value)
    assert details.code == Code.INVALID_ARGUMENT
    assert details.fields == [
        "interactions[1].interaction_id",
        "interactions[1].time",
        "interactions[2].book_id",
        "interactions[2].type",
        "interactions[3].rating",
        "interactions[4].session_id",
        "interactions[5].value.currency_code",
        "interactions[5].value.minor_units",
        "interactions[6].page_view_duration_seconds",
        "interactions[6].came_from",
    ]
    # Too many, or none.
    for count in (0, 501):
        many = [interaction() for _ in range(count)]
        await expect_error(
            ingest.RecordInteractions(pb.RecordInteractionsRequest(interactions=many)),
            Code.INVALID_ARGUMENT,
            "interactions",
        )


async def test_a_batch_of_500_is_accepted(ingest: Analytics, stream_records: Records) -> None:
    batch = [interaction() for _ in range(500)]
    answer = await ingest.RecordInteractions(
        pb.RecordInteractionsRequest(interactions=batch), timeout=30
    )
    assert answer.accepted_count == 500
    found = await stream_records([one.interaction_id for one in batch])
    assert len(found) == 500


async def test_only_services_record(
    channel_to: ChannelTo, shopper_token: str, admin_token: str
) -> None:
    request = pb.RecordInteractionsRequest(interactions=[interaction()])
    for token, code in (
        (None, Code.UNAUTHENTICATED),
        (shopper_token, Code.PERMISSION_DENIED),
        (admin_token, Code.PERMISSION_DENIED),
    ):
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel_to("analytics", token=token))
        await expect_error(stub.RecordInteractions(request), code)
        await expect_error(stub.RecordOrder(pb.RecordOrderRequest(order=order())), code)


async def test_a_retried_request_id_is_applied_once(
    ingest: Analytics, stream_records: Records, stack: Stack, aws: Callable[[str], Any]
) -> None:
    one = interaction()
    request = pb.RecordInteractionsRequest(interactions=[one], request_id=str(uuid.uuid4()))
    first = await ingest.RecordInteractions(request, timeout=10)
    again = await ingest.RecordInteractions(request, timeout=10)
    assert first == again
    await stream_records([one.interaction_id])
    # Put once: every record of the stream with that id counted.
    records = await read_stream(stack, aws("kinesis"))
    assert sum(envelope.get("id") == one.interaction_id for _, envelope in records) == 1
    # The same request id with another request is refused.
    other = pb.RecordInteractionsRequest(
        interactions=[interaction()], request_id=request.request_id
    )
    await expect_error(ingest.RecordInteractions(other), Code.FAILED_PRECONDITION)


# --- RecordOrder -----------------------------------------------------------------------------


async def test_an_order_is_recorded_once_and_other_content_is_refused(
    ingest: Analytics, stream_records: Records
) -> None:
    placed = order()
    await ingest.RecordOrder(pb.RecordOrderRequest(order=placed), timeout=10)
    # A redelivery of the same order: OK, recorded once.
    await ingest.RecordOrder(pb.RecordOrderRequest(order=placed), timeout=10)
    event_id = str(uuid.uuid5(ORDER_EVENT_NAMESPACE, placed.order_id))
    found = await stream_records([event_id])
    key, envelope = found[event_id]
    assert key == placed.user_id
    assert envelope["type"] == "order.recorded"
    assert envelope["subject"] == placed.order_id
    assert envelope["data"]["total_amount"] == {"minor_units": "4200", "currency_code": "USD"}
    assert envelope["data"]["order_status"] == "ORDER_STATUS_PLACED"
    changed = pb.Order()
    changed.CopyFrom(placed)
    changed.total_items = 3
    await expect_error(
        ingest.RecordOrder(pb.RecordOrderRequest(order=changed)), Code.ALREADY_EXISTS
    )


async def test_an_order_in_two_currencies_is_refused(ingest: Analytics) -> None:
    mixed = order(tax_amount=common_pb2.Money(minor_units=10, currency_code="EUR"))
    mixed.ClearField("order_time")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.RecordOrder(pb.RecordOrderRequest(order=mixed))
    details = details_of_error(refused.value)
    assert details.code == Code.INVALID_ARGUMENT
    assert details.fields == ["order.order_time", "order.tax_amount.currency_code"]
    await expect_error(ingest.RecordOrder(pb.RecordOrderRequest()), Code.INVALID_ARGUMENT, "order")


# --- the bus forwarder --------------------------------------------------------------------


async def _envelope_about(
    stack: Stack, aws: Callable[[str], Any], subject: str, event_type: str
) -> dict[str, Any]:
    """The stream's envelope of type `event_type` about `subject` (its id is the
    producer's, unknown to the test), with its partition key as "key"."""
    ((key, envelope),) = await wait_for_records(
        stack,
        aws("kinesis"),
        lambda e: e.get("subject") == subject and e.get("type") == event_type,
        1,
    )
    return {"key": key, **envelope}


async def test_catalog_events_reach_the_stream_through_the_forwarder(
    channel_to: ChannelTo, stack: Stack, aws: Callable[[str], Any], otlp: OtlpReceiver
) -> None:
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog"))
    created = (
        await catalog.CreateBook(
            catalog_pb2.CreateBookRequest(book=book(price=usd(1500))), timeout=10
        )
    ).book
    trace_id = secrets.token_hex(16)
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=catalog_pb2.Book(id=created.id, price=usd(1400)),
            update_mask=FieldMask(paths=["price"]),
        ),
        metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
        timeout=10,
    )
    updated = await _envelope_about(stack, aws, str(created.id), "book.updated")
    assert updated["source"] == "cloudshelf.catalog"
    assert updated["data"]["price_changed"] is True
    # Neither user nor session in a book's event: keyed by its subject, the book.
    assert updated["key"] == str(created.id)
    # The forwarder's span continues the trace of the UpdateBook.
    spans = await asyncio.to_thread(otlp.wait_for, trace_id, {"catalog", "analytics"})
    (forwarded,) = [
        s for s in spans if s.service_name == "analytics" and s.kind == SPAN_KIND_CONSUMER
    ]
    assert forwarded.name == "analytics forward process"
    assert forwarded.attributes[OUTCOME] == "deleted"
    assert forwarded.attributes["cloudshelf.event.id"] == updated["id"]


async def test_a_placed_order_reaches_the_stream_through_the_forwarder(
    channel_to: ChannelTo, stack: Stack, aws: Callable[[str], Any], new_user: NewUser
) -> None:
    buyer = new_user()
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog"))
    created = (
        await catalog.CreateBook(
            catalog_pb2.CreateBookRequest(book=book(price=usd(900))), timeout=10
        )
    ).book
    await catalog.AdjustInventory(
        catalog_pb2.AdjustInventoryRequest(
            adjustments=[catalog_pb2.InventoryAdjustment(book_id=created.id, delta=5)]
        ),
        timeout=10,
    )
    carts = cart_pb2_grpc.CartServiceStub(channel_to("cart", buyer.token))
    cart = (
        await carts.AddItem(cart_pb2.AddItemRequest(book_id=created.id, quantity=1), timeout=10)
    ).cart
    storefront = storefront_pb2_grpc.StorefrontServiceStub(channel_to("storefront", buyer.token))
    placed = (
        await storefront.PlaceOrder(
            storefront_pb2.PlaceOrderRequest(
                request_id=str(uuid.uuid4()),
                cart_etag=cart.etag,
                payment_method=storefront_pb2.PAYMENT_METHOD_CREDIT_CARD,
            ),
            timeout=15,
        )
    ).order
    envelope = await _envelope_about(stack, aws, placed.id, "order.placed")
    assert envelope["source"] == "cloudshelf.storefront"
    assert envelope["data"]["order"]["id"] == placed.id
    assert envelope["key"] == buyer.subject  # the order's user


async def test_cart_events_reach_the_stream_through_the_forwarder(
    channel_to: ChannelTo, stack: Stack, aws: Callable[[str], Any], new_user: NewUser
) -> None:
    shopper = new_user()
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog"))
    created = (
        await catalog.CreateBook(
            catalog_pb2.CreateBookRequest(book=book(price=usd(700))), timeout=10
        )
    ).book
    carts = cart_pb2_grpc.CartServiceStub(channel_to("cart", shopper.token))
    await carts.AddItem(cart_pb2.AddItemRequest(book_id=created.id, quantity=2), timeout=10)
    # cart table -> its DynamoDB stream -> the cart's stream processor -> bus -> forwarder.
    ((key, added),) = await wait_for_records(
        stack,
        aws("kinesis"),
        lambda e: (
            e.get("type") == "cart.item.added"
            and e["data"].get("book_id") == str(created.id)
            and e["data"].get("owner", {}).get("user_id") == shopper.subject
        ),
        1,
    )
    assert added["source"] == "cloudshelf.cart"
    assert added["data"]["quantity"] == 2
    assert key == shopper.subject  # the cart's owner


async def test_a_malformed_message_goes_to_the_dead_letters_while_events_flow(
    stack: Stack, stream_records: Records, aws: Callable[[str], Any]
) -> None:
    settings = stack.settings("analytics")
    event_id = str(uuid.uuid4())
    session_id = f"session-{secrets.token_hex(4)}"
    # An event of a source the rule takes, with an envelope of its own making.
    envelope = {
        "id": event_id,
        "type": "cart.item.added",
        "source": "cloudshelf.cart",
        "subject": f"session#{session_id}",
        "data_type": "cloudshelf.cart.v1.CartItemAddedEvent",
        "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"owner": {"session_id": session_id}, "book_id": "42", "quantity": 1},
    }
    await aws("events").put_events(
        Entries=[
            {
                "Source": "cloudshelf.cart",
                "DetailType": "cart.item.added",
                "Detail": json.dumps(envelope),
                "EventBusName": settings.event_bus,
            }
        ]
    )
    sqs = aws("sqs")
    url = (await sqs.get_queue_url(QueueName=events_queue()))["QueueUrl"]
    poison = f"not an event {secrets.token_hex(4)}"
    await sqs.send_message(QueueUrl=url, MessageBody=poison)
    found = await stream_records([event_id])
    key, forwarded = found[event_id]
    assert forwarded == envelope  # as is, its id kept
    assert key == session_id
    dead_letters = (await sqs.get_queue_url(QueueName=f"{events_queue()}-dlq"))["QueueUrl"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = await sqs.receive_message(
            QueueUrl=dead_letters, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in answer.get("Messages", []):
            await sqs.delete_message(QueueUrl=dead_letters, ReceiptHandle=message["ReceiptHandle"])
            if message["Body"] == poison:
                return
    raise AssertionError("the malformed message never reached the dead-letter queue")


# --- end to end: through the stack's consumer worker into all three sinks ----------------


async def _poll(what: str, probe: Callable[[], Any], within: float = 90.0) -> Any:
    """probe()'s answer once it is truthy; fails with its last answer after `within` s."""
    deadline = time.monotonic() + within
    while True:
        answer = await probe()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what}: {answer!r} after {within} s"
        await asyncio.sleep(0.5)


def _is_mine(row: dict[str, Any], owner: str, book_id: int) -> bool:
    """Whether a lake row of a cart event is the test's buyer's, about its book (the other
    rows were filtered by their ids and subjects)."""
    if not row["event_type"].startswith("cart."):
        return True
    data = json.loads(row["data"])
    books = [data.get("book_id")] + [line.get("book_id") for line in data.get("removed", [])]
    return bool(data.get("owner", {}).get("user_id") == owner and str(book_id) in books)


async def test_an_order_cart_and_catalog_events_and_interactions_reach_all_three_sinks(
    ingest: Analytics, channel_to: ChannelTo, stack: Stack, new_user: NewUser
) -> None:
    """Issue 19's "Done means": an order (PlaceOrder through the storefront, and
    RecordOrder), cart events (AddItem -> the cart's stream processor -> the bus -> the
    forwarder), catalog events (a category and a book created, the book updated) and
    interactions (RecordInteractions) reach the warehouse, Timestream and the Parquet
    lake through the stack's running consumer worker; the lake's counts equal the
    warehouse's."""
    assert health_status(stack.worker_address("analytics-consumer")) == "SERVING"
    settings = stack.settings("analytics")
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog"))
    category_name = f"Analytics {word()}"  # this test's own Timestream BookCategory
    category = (
        await catalog.CreateCategory(
            catalog_pb2.CreateCategoryRequest(category=catalog_pb2.Category(name=category_name)),
            timeout=10,
        )
    ).category
    created = (
        await catalog.CreateBook(
            catalog_pb2.CreateBookRequest(book=book(price=usd(1100), category_id=category.id)),
            timeout=10,
        )
    ).book
    title = f"Renamed {word()}"
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=catalog_pb2.Book(id=created.id, title=title),
            update_mask=FieldMask(paths=["title"]),
        ),
        timeout=10,
    )
    await catalog.AdjustInventory(
        catalog_pb2.AdjustInventoryRequest(
            adjustments=[catalog_pb2.InventoryAdjustment(book_id=created.id, delta=5)]
        ),
        timeout=10,
    )
    conn = await asyncpg.connect(stack.postgres.dsn("analytics"))
    try:
        # The catalog's events in the warehouse first: the Timestream sink names a cart
        # event's category from dim_books as it stands when the event is written.
        async def book_in_dim_books() -> Any:
            row = await conn.fetchrow(
                "SELECT title, category_name, price_range, aggregate_version "
                "FROM analytics.dim_books WHERE book_id = $1",
                created.id,
            )
            return (
                row
                if row
                and (row["title"], row["category_name"])
                == (
                    title,
                    category_name,
                )
                else None
            )

        dim_book = await _poll("the book in dim_books", book_in_dim_books)
        assert dim_book["price_range"] == "medium"  # 11.00

        # Cart events and an order placed through the storefront.
        buyer = new_user()
        carts = cart_pb2_grpc.CartServiceStub(channel_to("cart", buyer.token))
        cart = (
            await carts.AddItem(cart_pb2.AddItemRequest(book_id=created.id, quantity=2), timeout=10)
        ).cart
        storefront = storefront_pb2_grpc.StorefrontServiceStub(
            channel_to("storefront", buyer.token)
        )
        placed = (
            await storefront.PlaceOrder(
                storefront_pb2.PlaceOrderRequest(
                    request_id=str(uuid.uuid4()),
                    cart_etag=cart.etag,
                    payment_method=storefront_pb2.PAYMENT_METHOD_CREDIT_CARD,
                ),
                timeout=15,
            )
        ).order
        # Interactions and an order recorded by a service.
        views = [interaction(book_id=created.id) for _ in range(3)]
        await ingest.RecordInteractions(
            pb.RecordInteractionsRequest(interactions=views), timeout=10
        )
        recorded = order()
        await ingest.RecordOrder(pb.RecordOrderRequest(order=recorded), timeout=10)
        view_ids = [v.interaction_id for v in views]
        order_ids = [placed.id, recorded.order_id]

        # 1. The warehouse: the facts, once each.
        async def facts() -> Any:
            interactions = await conn.fetchval(
                "SELECT count(*) FROM analytics.fact_book_interactions "
                "WHERE interaction_id = ANY($1::text[])",
                view_ids,
            )
            orders = await conn.fetch(
                "SELECT order_id, total_amount_minor FROM analytics.fact_orders "
                "WHERE order_id = ANY($1::text[])",
                order_ids,
            )
            lines = await conn.fetch(
                "SELECT book_id, category_name, quantity, revenue_minor "
                "FROM analytics.fact_order_lines WHERE order_id = $1",
                placed.id,
            )
            done = interactions == 3 and len(orders) == 2 and len(lines) == 1
            return (
                (
                    interactions,
                    {r["order_id"]: r["total_amount_minor"] for r in orders},
                    [tuple(r) for r in lines],
                )
                if done
                else None
            )

        interactions, orders, lines = await _poll("the facts in the warehouse", facts)
        assert orders == {placed.id: placed.total.minor_units, recorded.order_id: 4200}
        assert lines == [(created.id, category_name, 2, 2200)]

        # 2. Timestream's CartEvents, as the emulator holds them (its queries answer
        # nothing): the category is this test's own, so these are this test's records.
        async def cart_records() -> Any:
            records = await asyncio.to_thread(emulator_records, stack, settings.timestream_database)
            mine = [
                r
                for r in records
                if {"Name": "BookCategory", "Value": category_name} in r["Dimensions"]
            ]
            kinds = {
                next(d["Value"] for d in r["Dimensions"] if d["Name"] == "EventType") for r in mine
            }
            return mine if kinds >= {"cart.item.added", "cart.cleared", "order.placed"} else None

        in_timestream = await _poll("the cart events in Timestream", cart_records)
        values = Counter(
            (
                {d["Name"]: d["Value"] for d in r["Dimensions"]}["EventType"],
                {d["Name"]: d["Value"] for d in r["Dimensions"]}["Currency"],
                r["MeasureName"],
                r["MeasureValue"],
            )
            for r in in_timestream
        )
        assert values == Counter(
            {
                ("cart.item.added", "USD", "CartValue", "2200"): 1,  # 2 x 11.00 into the cart
                ("cart.cleared", "USD", "CartValue", "-2200"): 1,  # emptied by the checkout
                ("order.placed", "USD", "CartValue", "2200"): 1,  # what the cart became
            }
        )

        # 3. The Parquet lake, read as a reader would (pyarrow.dataset, Hive partitions).
        def lake_rows() -> list[dict[str, Any]]:
            dataset = lake_dataset(stack, settings.data_lake_bucket)
            table = dataset.to_table(
                filter=pc.field("id").isin([*view_ids, order_event_id(recorded.order_id)])
                | pc.field("subject").isin([str(created.id), str(category.id), placed.id])
                | pc.field("event_type").isin(["cart.item.added", "cart.cleared"]),
                columns=["id", "event_type", "subject", "aggregate_version", "data"],
            )
            return [row for row in table.to_pylist() if _is_mine(row, buyer.subject, created.id)]

        async def whole_lake() -> Any:
            rows = await asyncio.to_thread(lake_rows)
            kinds = Counter(r["event_type"] for r in rows)
            wanted = {
                "interaction.recorded": 3,
                "order.placed": 1,
                "order.recorded": 1,
                "cart.item.added": 1,
                "cart.cleared": 1,
                "book.created": 1,
                "book.updated": 1,
                "category.created": 1,
            }
            return rows if all(kinds[k] >= n for k, n in wanted.items()) else None

        in_lake = await _poll("the events in the lake", whole_lake)
        by_type = Counter(r["event_type"] for r in in_lake)
        # Every event once, and as many as the warehouse holds of each.
        assert len({r["id"] for r in in_lake}) == len(in_lake)
        assert by_type["interaction.recorded"] == interactions
        assert by_type["order.placed"] + by_type["order.recorded"] == len(orders)
        catalog_versions = [
            r["aggregate_version"]
            for r in in_lake
            if r["event_type"].startswith("book.") and r["subject"] == str(created.id)
        ]
        assert max(catalog_versions) == await conn.fetchval(
            "SELECT aggregate_version FROM analytics.dim_books WHERE book_id = $1", created.id
        )
        # ... and as many cart and order events as Timestream has records of them.
        assert by_type["cart.item.added"] + by_type["cart.cleared"] + by_type[
            "order.placed"
        ] == len(in_timestream)
        placed_row = next(r for r in in_lake if r["event_type"] == "order.placed")
        assert json.loads(placed_row["data"])["order"]["id"] == placed.id
    finally:
        await conn.close()
