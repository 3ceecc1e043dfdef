"""Catalog events leave through the outbox: committed changes publish, rolled-back ones
do not, each event has a unique id and carries the producer's trace context."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aioboto3
import grpc
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from tests.conftest import expect_error
from tests.factories import book, usd

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub


class EventTap:
    """An SQS queue subscribed to the catalog's events on the bus (how a consumer sees them)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.received: list[dict[str, Any]] = []

    async def wait_for(self, predicate: Any, seconds: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for event in self.received:
                if predicate(event):
                    return event
            response = await self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in response.get("Messages", []):
                envelope = json.loads(message["Body"])["detail"]
                envelope["data"] = json.loads(envelope["dataJson"])
                self.received.append(envelope)
                await self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        raise AssertionError("expected event not published")


@pytest_asyncio.fixture
async def events(stack: Stack) -> AsyncIterator[EventTap]:
    settings = stack.settings("catalog")
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    async with (
        session.client("sqs", endpoint_url=stack.aws.url) as sqs,
        session.client("events", endpoint_url=stack.aws.url) as bridge,
    ):
        name = f"catalog-tap-{secrets.token_hex(4)}"
        queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        await bridge.put_rule(
            Name=name,
            EventBusName=settings.event_bus,
            EventPattern=json.dumps({"source": ["cloudshelf.catalog"]}),
        )
        await bridge.put_targets(
            Rule=name, EventBusName=settings.event_bus, Targets=[{"Id": "tap", "Arn": arn}]
        )
        yield EventTap(sqs, queue_url)
        await bridge.remove_targets(Rule=name, EventBusName=settings.event_bus, Ids=["tap"])
        await bridge.delete_rule(Name=name, EventBusName=settings.event_bus)
        await sqs.delete_queue(QueueUrl=queue_url)


async def test_committed_changes_publish_their_events(
    catalog: CatalogServiceAsyncStub, events: EventTap
) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    created = (
        await catalog.CreateBook(
            pb.CreateBookRequest(book=book()), metadata=(("traceparent", traceparent),)
        )
    ).book
    event = await events.wait_for(
        lambda e: e["type"] == "book.created" and e["data"]["book_id"] == created.id
    )
    assert event["source"] == "cloudshelf.catalog" and event["id"]
    assert event["traceparent"].split("-")[1] == trace_id  # consumers join the producer's trace

    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=created.id, price=usd(999)), update_mask=FieldMask(paths=["price"])
        )
    )
    updated = await events.wait_for(
        lambda e: e["type"] == "book.updated" and e["data"]["book_id"] == created.id
    )
    assert updated["data"]["price_changed"] is True
    assert updated["data"]["changed_fields"] == ["price"]
    assert updated["data"]["old"]["price"] == "19.99" and updated["data"]["new"]["price"] == "9.99"

    await catalog.AdjustInventory(
        pb.AdjustInventoryRequest(adjustments=[pb.InventoryAdjustment(book_id=created.id, delta=4)])
    )
    stock = await events.wait_for(
        lambda e: e["type"] == "inventory.adjusted" and e["data"]["book_id"] == created.id
    )
    assert stock["data"]["stock_quantity"] == 4
    assert len({event["id"], updated["id"], stock["id"]}) == 3


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
    # Events are relayed in commit order: once the marker is out, anything before it is too.
    await events.wait_for(
        lambda e: e["type"] == "book.created" and e["data"]["book_id"] == marker.id
    )
    await asyncio.sleep(0.5)
    await events.wait_for(lambda e: e["data"].get("book_id") == kept.id)
    assert not [e for e in events.received if e["data"].get("isbn_13") == doomed.isbn_13]
    assert not [
        e
        for e in events.received
        if e["type"] == "book.updated" and e["data"]["book_id"] == kept.id
    ]
