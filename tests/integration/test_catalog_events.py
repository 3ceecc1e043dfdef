"""Catalog events leave through the outbox: committed changes publish, rolled-back ones
do not; each event has a unique id, the aggregate's id and database version, its data as a
JSON object that EventBridge rules can match inside, and the producer's trace context.
Consumers here are SQS queues subscribed to the bus in the AWS emulator."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aioboto3
import grpc
import pytest_asyncio
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from tests.conftest import expect_error
from tests.factories import book, usd
from tests.otlp_receiver import OtlpReceiver

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

CATALOG_EVENTS = {"source": ["cloudshelf.catalog"]}


class EventTap:
    """An SQS queue subscribed to the bus with a rule (how a consumer sees the events)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.received: list[dict[str, Any]] = []

    async def _receive(self) -> None:
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in response.get("Messages", []):
            self.received.append(json.loads(message["Body"])["detail"])
            await self.sqs.delete_message(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )

    async def wait_for(self, predicate: Any, seconds: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for event in self.received:
                if predicate(event):
                    return event
            await self._receive()
        raise AssertionError("expected event not published")

    async def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self._receive()
        return self.received


TapFactory = Callable[[dict[str, Any]], Awaitable[EventTap]]


@pytest_asyncio.fixture
async def tap(stack: Stack) -> AsyncIterator[TapFactory]:
    """tap(pattern) -> a queue that receives the bus's events matching the rule pattern."""
    settings = stack.settings("catalog")
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    async with (
        session.client("sqs", endpoint_url=stack.aws.url) as sqs,
        session.client("events", endpoint_url=stack.aws.url) as bridge,
    ):
        made: list[tuple[str, str]] = []

        async def subscribe(pattern: dict[str, Any]) -> EventTap:
            name = f"catalog-tap-{secrets.token_hex(4)}"
            queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            arn = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]))[
                "Attributes"
            ]["QueueArn"]
            await bridge.put_rule(
                Name=name, EventBusName=settings.event_bus, EventPattern=json.dumps(pattern)
            )
            await bridge.put_targets(
                Rule=name, EventBusName=settings.event_bus, Targets=[{"Id": "tap", "Arn": arn}]
            )
            made.append((name, queue_url))
            return EventTap(sqs, queue_url)

        yield subscribe
        for name, queue_url in made:
            await bridge.remove_targets(Rule=name, EventBusName=settings.event_bus, Ids=["tap"])
            await bridge.delete_rule(Name=name, EventBusName=settings.event_bus)
            await sqs.delete_queue(QueueUrl=queue_url)


@pytest_asyncio.fixture
async def events(tap: TapFactory) -> EventTap:
    return await tap(CATALOG_EVENTS)


def about(event_type: str, subject: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == event_type and e["subject"] == str(subject)


def version(event: dict[str, Any]) -> int:
    return int(event["aggregate_version"])  # int64: a string in proto JSON


async def test_committed_changes_publish_their_events(
    catalog: CatalogServiceAsyncStub, events: EventTap
) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    created = (
        await catalog.CreateBook(
            pb.CreateBookRequest(book=book()),
            metadata=(("traceparent", traceparent), ("tracestate", "shop=checkout")),
        )
    ).book
    event = await events.wait_for(about("book.created", created.id))
    assert event["source"] == "cloudshelf.catalog" and event["id"]
    assert event["traceparent"].split("-")[1] == trace_id  # consumers join the producer's trace
    assert event["tracestate"] == "shop=checkout"
    assert event["occurred_at"].endswith("Z")
    # The data is a JSON object, the JSON form of the message named by data_type.
    assert event["data_type"] == "cloudshelf.catalog.v1.BookCreatedEvent"
    data = json_format.ParseDict(event["data"], pb.BookCreatedEvent())
    assert data.book.id == created.id and data.book.title == created.title
    assert event["data"]["book"]["price"] == {"minor_units": "1999", "currency_code": "USD"}

    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=created.id, price=usd(999)), update_mask=FieldMask(paths=["price"])
        )
    )
    updated = await events.wait_for(about("book.updated", created.id))
    assert updated["data"]["price_changed"] is True
    assert updated["data"]["changed_fields"] == ["price"]
    assert updated["data"]["before"]["price"]["minor_units"] == "1999"
    assert updated["data"]["after"]["price"]["minor_units"] == "999"
    assert version(updated) > version(event)

    await catalog.AdjustInventory(
        pb.AdjustInventoryRequest(adjustments=[pb.InventoryAdjustment(book_id=created.id, delta=4)])
    )
    stock = await events.wait_for(about("inventory.adjusted", created.id))
    assert stock["data"] == {
        "book_id": str(created.id),
        "delta": 4,
        "stock_quantity": 4,
        "purchased": 0,
    }
    assert version(stock) > version(updated)  # the book's version after the stock change
    assert len({event["id"], updated["id"], stock["id"]}) == 3


async def test_a_rule_can_match_inside_the_data(
    catalog: CatalogServiceAsyncStub, tap: TapFactory
) -> None:
    # "Notify cart users on a price change" as a rule, not as code.
    price_changes = await tap(
        {**CATALOG_EVENTS, "detail": {"type": ["book.updated"], "data": {"price_changed": [True]}}}
    )
    everything = await tap(CATALOG_EVENTS)
    created = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=created.id, title="Retitled"), update_mask=FieldMask(paths=["title"])
        )
    )
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=created.id, price=usd(1234)), update_mask=FieldMask(paths=["price"])
        )
    )
    await everything.wait_for(
        lambda e: about("book.updated", created.id)(e) and e["data"]["price_changed"]
    )
    matched = await price_changes.wait_for(about("book.updated", created.id))
    assert matched["data"]["after"]["price"]["minor_units"] == "1234"
    received = await price_changes.drain(1.0)
    assert [e["data"]["changed_fields"] for e in received] == [["price"]]


async def test_authors_publishers_categories_and_reviews_publish_their_events(
    catalog: CatalogServiceAsyncStub, events: EventTap
) -> None:
    tag = secrets.token_hex(3)
    author = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Ada", last_name=f"L{tag}"))
        )
    ).author
    await catalog.UpdateAuthor(
        pb.UpdateAuthorRequest(
            author=pb.Author(id=author.id, bio="Wrote the first program"),
            update_mask=FieldMask(paths=["bio"]),
        )
    )
    publisher = (
        await catalog.CreatePublisher(
            pb.CreatePublisherRequest(publisher=pb.Publisher(name=f"Press {tag}"))
        )
    ).publisher
    await catalog.UpdatePublisher(
        pb.UpdatePublisherRequest(
            publisher=pb.Publisher(id=publisher.id, country="UK"),
            update_mask=FieldMask(paths=["country"]),
        )
    )
    category = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"Topic {tag}"))
        )
    ).category
    await catalog.UpdateCategory(
        pb.UpdateCategoryRequest(
            category=pb.Category(id=category.id, description="All about it"),
            update_mask=FieldMask(paths=["description"]),
        )
    )

    for kind, entity, field in (
        ("author", author.id, "bio"),
        ("publisher", publisher.id, "country"),
        ("category", category.id, "description"),
    ):
        created = await events.wait_for(about(f"{kind}.created", entity))
        assert created["data"][kind]["id"] == str(entity)
        updated = await events.wait_for(about(f"{kind}.updated", entity))
        assert updated["data"]["changed_fields"] == [field]
        assert version(updated) == version(created) + 1
    assert (await events.wait_for(about("author.updated", author.id)))["data"]["author"][
        "bio"
    ] == "Wrote the first program"

    target = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    review = (
        await catalog.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=target.id, rating=4)))
    ).review
    await catalog.UpdateReview(
        pb.UpdateReviewRequest(
            review=pb.Review(id=review.id, rating=2), update_mask=FieldMask(paths=["rating"])
        )
    )
    await catalog.ModerateReview(
        pb.ModerateReviewRequest(review_id=review.id, status=pb.REVIEW_STATUS_REJECTED)
    )
    await catalog.DeleteReview(pb.DeleteReviewRequest(review_id=review.id))
    added = await events.wait_for(about("review.added", review.id))
    edited = await events.wait_for(about("review.updated", review.id))
    moderated = await events.wait_for(about("review.moderated", review.id))
    deleted = await events.wait_for(about("review.deleted", review.id))
    assert added["data"]["review"]["book_id"] == str(target.id)
    assert (
        edited["data"]["changed_fields"] == ["rating"] and edited["data"]["review"]["rating"] == 2
    )
    assert moderated["data"]["review"]["status"] == "REVIEW_STATUS_REJECTED"
    assert moderated["data"]["previous_status"] == "REVIEW_STATUS_PUBLISHED"
    assert deleted["data"] == {"review_id": str(review.id), "book_id": str(target.id)}
    # Each change is a newer version; the deletion is the newest of all.
    assert [version(e) for e in (added, edited, moderated, deleted)] == [1, 2, 3, 4]


async def test_an_update_that_changes_nothing_publishes_nothing(
    catalog: CatalogServiceAsyncStub, events: EventTap
) -> None:
    author = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Same", last_name="Name"))
        )
    ).author
    await catalog.UpdateAuthor(
        pb.UpdateAuthorRequest(
            author=pb.Author(id=author.id, first_name="Same"),
            update_mask=FieldMask(paths=["first_name"]),
        )
    )
    marker = (
        await catalog.CreatePublisher(
            pb.CreatePublisherRequest(publisher=pb.Publisher(name=f"Marker {secrets.token_hex(3)}"))
        )
    ).publisher
    await events.wait_for(about("publisher.created", marker.id))
    await events.drain(0.5)
    assert not [e for e in events.received if about("author.updated", author.id)(e)]


async def test_a_rolled_back_write_publishes_nothing(
    catalog: CatalogServiceAsyncStub, events: EventTap
) -> None:
    # The insert succeeds, then linking an unknown author fails: the transaction rolls back.
    doomed = book(authors=[pb.BookAuthor(author_id=2_000_000_000)])
    await expect_error(
        catalog.CreateBook(pb.CreateBookRequest(book=doomed)), grpc.StatusCode.NOT_FOUND
    )
    # An unchanged update writes no event either.
    kept = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=kept.id, title=kept.title), update_mask=FieldMask(paths=["title"])
        )
    )
    marker = (await catalog.CreateBook(pb.CreateBookRequest(book=book()))).book
    await events.wait_for(about("book.created", marker.id))
    await asyncio.sleep(0.5)
    await events.wait_for(about("book.created", kept.id))
    assert not [
        e
        for e in events.received
        if e["type"] == "book.created" and e["data"]["book"]["isbn_13"] == doomed.isbn_13
    ]
    assert not [e for e in events.received if about("book.updated", kept.id)(e)]


async def test_a_relay_round_is_one_span_linked_to_the_producing_trace(
    catalog: CatalogServiceAsyncStub, events: EventTap, otlp: OtlpReceiver
) -> None:
    trace_id = secrets.token_hex(16)
    created = (
        await catalog.CreateBook(
            pb.CreateBookRequest(book=book()),
            metadata=(("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),),
        )
    ).book
    await events.wait_for(about("book.created", created.id))
    deadline = time.monotonic() + 10
    while not (rounds := otlp.spans_linked_to(trace_id)):
        assert time.monotonic() < deadline, "no relay span linked to the producing trace"
        await asyncio.sleep(0.1)
    assert [(s.service_name, s.name) for s in rounds] == [("catalog", "outbox relay")]
    assert rounds[0].parent_span_id == ""  # a root of its own, not part of the request
    # The backlog gauge is exported too.
    deadline = time.monotonic() + 10
    # The storefront has an outbox of its own: the catalog's gauge is the one checked.
    while not (
        ages := [
            gauge
            for gauge in otlp.gauges("cloudshelf.outbox.oldest_unpublished_age")
            if gauge.service_name == "catalog"
        ]
    ):
        assert time.monotonic() < deadline, "no backlog gauge exported"
        await asyncio.sleep(0.1)
    assert ("outbox", "book_catalog.outbox") in ages[-1].attributes
    assert ages[-1].service_name == "catalog"
