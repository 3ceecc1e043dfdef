"""Price-change notifications (issue 17, item 10) through gRPC against the real stack: a
catalog price change travels catalog outbox -> EventBridge rule -> SQS -> the cart's
consumer -> one notification per owner holding the book; NotificationService lists and
marks them, for their owner only.

Which owners hold a book is the BookHolders index (pk bookId, sk owner), kept from the cart
table's stream by the stream processor. The tests that are about the consumer write the
index rows they need with boto3 (state set-up, like creating a book); the last test
(`test_post_merge_...`) relies on the stream processor itself and runs once provisioning
makes the BookHolders table.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aioboto3
import grpc
import pytest_asyncio
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.aws_resources import ensure_queue, ensure_rule_to_queue
from cloudshelf.runtime.queues import OUTCOME, ConsumerPolicy
from services.cart.notifications import PRICE_CHANGES_PATTERN
from services.cart.provision import provision
from services.cart.tables import book_holders_table_name
from tests.conftest import ChannelTo, NewUser, User, expect_error, wait_for_health
from tests.error_details import details_of_error
from tests.factories import book, usd
from tests.otlp_receiver import OtlpReceiver

if TYPE_CHECKING:
    from cloudshelf.cart.v1.cart_pb2_grpc import NotificationServiceAsyncStub as Notifications
SPAN_KIND_CONSUMER = 5
# Owners of one book in the fan-out test: enough to outlast a 1 s visibility timeout.
FAN_OUT = 600


# --- AWS state: the index rows, the queues ----------------------------------------------


@dataclass
class Aws:
    dynamodb: Any
    sqs: Any
    events: Any
    stack: Stack

    @property
    def holders_table(self) -> str:
        return book_holders_table_name(self.stack.settings("cart").cart_table)

    @property
    def queue_name(self) -> str:
        return self.stack.settings("cart").cart_price_changes_queue

    async def queue_url(self, name: str | None = None) -> str:
        answer = await self.sqs.get_queue_url(QueueName=name or self.queue_name)
        return str(answer["QueueUrl"])

    async def holders_table_exists(self) -> bool:
        try:
            await self.dynamodb.describe_table(TableName=self.holders_table)
        except self.dynamodb.exceptions.ResourceNotFoundException:
            return False
        return True

    async def hold(self, book_id: int, owner: User) -> None:
        """An index row: `owner`'s cart holds the book (what the stream processor writes)."""
        await self.dynamodb.put_item(
            TableName=self.holders_table,
            Item={
                "bookId": {"S": str(book_id)},
                "owner": {"S": f"user#{owner.subject}"},
                "expiresAt": {"N": str(int(time.time()) + 90 * 86400)},
            },
        )

    async def holds(self, book_id: int, owner: User) -> bool:
        answer = await self.dynamodb.get_item(
            TableName=self.holders_table,
            Key={"bookId": {"S": str(book_id)}, "owner": {"S": f"user#{owner.subject}"}},
            ConsistentRead=True,
        )
        return "Item" in answer


@pytest_asyncio.fixture(scope="session")
async def aws(stack: Stack) -> AsyncIterator[Aws]:
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    async with (
        session.client("dynamodb", endpoint_url=stack.aws.url) as dynamodb,
        session.client("sqs", endpoint_url=stack.aws.url) as sqs,
        session.client("events", endpoint_url=stack.aws.url) as events,
    ):
        yield Aws(dynamodb, sqs, events, stack)


@pytest_asyncio.fixture(scope="session")
async def book_holders(aws: Aws) -> Aws:
    """The BookHolders table (provisioned for the stream processor) to write index rows
    into directly, for the consumer's own tests."""
    assert await aws.holders_table_exists(), "provisioning made no BookHolders table"
    return aws


@pytest_asyncio.fixture
async def price_change_tap(aws: Aws, stack: Stack) -> AsyncIterator[Callable[[int], Any]]:
    """tap(book_id) -> the SQS body of the next price change of the book, as the rule
    delivers it, from a queue of our own subscribed with the cart's pattern."""
    bus = stack.settings("cart").event_bus
    name = f"price-tap-{secrets.token_hex(4)}"
    queue, dead_letters = await ensure_queue(aws.sqs, name)
    await ensure_rule_to_queue(
        aws.events, aws.sqs, bus=bus, rule=name, pattern=PRICE_CHANGES_PATTERN, queue=queue
    )

    async def next_body(book_id: int) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = await aws.sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in answer.get("Messages", []):
                await aws.sqs.delete_message(
                    QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"]
                )
                if json.loads(message["Body"])["detail"]["subject"] == str(book_id):
                    return str(message["Body"])
        raise AssertionError(f"no price change of book {book_id} reached the tap")

    yield next_body
    await aws.events.remove_targets(Rule=name, EventBusName=bus, Ids=["queue"])
    await aws.events.delete_rule(Name=name, EventBusName=bus)
    for made in (queue, dead_letters):
        await aws.sqs.delete_queue(QueueUrl=made.url)


# --- gRPC helpers -----------------------------------------------------------------------


def _notifications(channel_to: ChannelTo, user: User | None) -> Notifications:
    channel = channel_to("cart", user.token if user else None)
    return cart_pb2_grpc.NotificationServiceStub(channel)  # type: ignore[return-value]


async def _listed_book(catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, price: int) -> int:
    request = catalog_pb2.CreateBookRequest(book=book(price=usd(price)))
    return (await catalog.CreateBook(request, timeout=10)).book.id


async def _change_price(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    book_id: int,
    price: int,
    metadata: tuple[tuple[str, str], ...] = (),
) -> None:
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=catalog_pb2.Book(id=book_id, price=usd(price)),
            update_mask=FieldMask(paths=["price"]),
        ),
        metadata=metadata,
        timeout=10,
    )


async def _all(stub: Notifications, **filters: bool) -> list[cart_pb2.Notification]:
    found: list[cart_pb2.Notification] = []
    token = ""
    while True:
        page = await stub.ListNotifications(
            cart_pb2.ListNotificationsRequest(page_size=100, page_token=token, **filters),
            timeout=10,
        )
        found += page.notifications
        token = page.next_page_token
        if not token:
            return found


async def _of_book(stub: Notifications, book_id: int) -> list[cart_pb2.Notification]:
    return [n for n in await _all(stub) if n.book_id == book_id]


async def _wait_for(
    stub: Notifications, book_id: int, count: int, seconds: float = 20.0
) -> list[cart_pb2.Notification]:
    """The owner's notifications of the book once there are `count` of them."""
    deadline = time.monotonic() + seconds
    while True:
        found = await _of_book(stub, book_id)
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) == count, f"{len(found)} notifications of book {book_id}"
            return found
        await asyncio.sleep(0.2)


async def _handled(otlp: OtlpReceiver, message_ids: set[str], seconds: float = 20.0) -> None:
    """Until a cart replica's consumer span says each message was handled and deleted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = {
            span.attributes.get("messaging.message.id")
            for span in otlp.spans_of_service("cart")
            if span.attributes.get(OUTCOME) == "deleted"
        }
        if message_ids <= done:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"messages not handled: {message_ids - done}")


async def _reason(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        info = details_of_error(exc).error_info
        assert info is not None
        return f"{exc.code().name} {info.reason}"
    raise AssertionError("the call succeeded")


# --- the path from the catalog ------------------------------------------------------------


async def test_a_price_change_notifies_each_holder_once(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    book_holders: Aws,
    otlp: OtlpReceiver,
) -> None:
    first, second, bystander = new_user(), new_user(), new_user()
    book_id = await _listed_book(catalog, 1999)
    other_book = await _listed_book(catalog, 500)
    for holder in (first, second):
        await book_holders.hold(book_id, holder)
    await book_holders.hold(other_book, bystander)

    # A change that is not a price change notifies nobody (the rule does not match it).
    await catalog.UpdateBook(
        catalog_pb2.UpdateBookRequest(
            book=catalog_pb2.Book(id=book_id, title="Renamed before the sale"),
            update_mask=FieldMask(paths=["title"]),
        ),
        timeout=10,
    )
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    await _change_price(catalog, book_id, 1499, (("traceparent", traceparent),))

    for holder in (first, second):
        (notice,) = await _wait_for(_notifications(channel_to, holder), book_id, 1)
        assert notice.title == "Renamed before the sale"
        assert notice.old_price == usd(1999) and notice.new_price == usd(1499)
        assert not notice.read and notice.id
        assert notice.create_time.seconds > 0
        assert 29 * 86400 < notice.expire_time.seconds - time.time() <= 30 * 86400
    # The consumer's span continues the trace of the UpdateBook that changed the price.
    spans = await asyncio.to_thread(otlp.wait_for, trace_id, {"catalog", "cart"})
    (consumer,) = [s for s in spans if s.service_name == "cart" and s.kind == SPAN_KIND_CONSUMER]
    assert consumer.name == "price change process" and consumer.attributes[OUTCOME] == "deleted"

    await asyncio.sleep(2)  # anything late would show up now: nothing does
    for holder in (first, second):
        assert len(await _of_book(_notifications(channel_to, holder), book_id)) == 1
    assert await _all(_notifications(channel_to, bystander)) == []


async def test_the_same_message_delivered_again_makes_no_second_notification(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    book_holders: Aws,
    price_change_tap: Callable[[int], Any],
    spawn_service: Any,
    otlp: OtlpReceiver,
) -> None:
    holder = new_user()
    book_id = await _listed_book(catalog, 2500)
    await book_holders.hold(book_id, holder)
    await _change_price(catalog, book_id, 2000)
    body = await price_change_tap(book_id)  # the very message the rule delivered
    (first,) = await _wait_for(_notifications(channel_to, holder), book_id, 1)
    # Read before the copies come: a copy must not bring it back as a new, unread one.
    await _notifications(channel_to, holder).MarkNotificationsRead(
        cart_pb2.MarkNotificationsReadRequest(notification_ids=[first.id])
    )
    first.read = True

    # SQS delivers at least once, to any of the replicas: a second cart consumes too.
    replica, address = spawn_service("cart")
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    url = await book_holders.queue_url()
    sent = await asyncio.gather(
        *(book_holders.sqs.send_message(QueueUrl=url, MessageBody=body) for _ in range(4))
    )
    await _handled(otlp, {answer["MessageId"] for answer in sent})
    assert await _of_book(_notifications(channel_to, holder), book_id) == [first]

    # A stopped replica's last long poll lives on in SQS until its wait ends, and takes a
    # message sent meanwhile until the visibility timeout: let it end for the next tests.
    await asyncio.to_thread(replica.stop)
    await asyncio.sleep(ConsumerPolicy().wait_seconds + 1)


async def test_a_long_fan_out_keeps_its_message_from_other_consumers(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    book_holders: Aws,
    price_change_tap: Callable[[int], Any],
    spawn_service: Any,
    otlp: OtlpReceiver,
) -> None:
    # A replica of its own on a queue of its own, whose messages hide for 1 s only: writing
    # hundreds of notifications takes longer, so without renewing the visibility the
    # message would be received a second time while the first receive still works on it.
    name = f"price-fanout-{secrets.token_hex(4)}"
    queue, dead_letters = await ensure_queue(book_holders.sqs, name, visibility_timeout=1)
    replica, address = spawn_service(
        "cart",
        CLOUDSHELF_CART_PRICE_CHANGES_QUEUE=name,
        CLOUDSHELF_CART_PRICE_CHANGES_VISIBILITY_SECONDS="1",
    )
    try:
        holder = new_user()
        book_id = await _listed_book(catalog, 4000)
        await book_holders.hold(book_id, holder)
        rows = [
            {
                "PutRequest": {
                    "Item": {
                        "bookId": {"S": str(book_id)},
                        "owner": {"S": f"user#fan-out-{number}"},
                    }
                }
            }
            for number in range(FAN_OUT)
        ]
        for start in range(0, len(rows), 25):
            await book_holders.dynamodb.batch_write_item(
                RequestItems={book_holders.holders_table: rows[start : start + 25]}
            )
        await _change_price(catalog, book_id, 3500)
        body = await price_change_tap(book_id)
        await asyncio.to_thread(wait_for_health, address, "SERVING")
        began = time.monotonic()
        sent = await book_holders.sqs.send_message(QueueUrl=queue.url, MessageBody=body)
        handled = asyncio.create_task(_handled(otlp, {sent["MessageId"]}, seconds=120))
        # Once the replica has received it (in flight: not visible), another consumer
        # polls meanwhile: it must never be handed the message. (Polling from the start
        # would race the replica's own receive, which SQS may lose to either poller.)
        while True:
            attributes = await book_holders.sqs.get_queue_attributes(
                QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )
            if int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"]):
                break
            assert time.monotonic() - began < 30, "the replica never received the message"
            await asyncio.sleep(0.05)
        handed_over = 0
        while not handled.done() and not handed_over:
            answer = await book_holders.sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            handed_over += len(answer.get("Messages", []))
        took = time.monotonic() - began
        if handed_over:
            handled.cancel()
            raise AssertionError(f"handed to another consumer after {took:.1f}s of writing")
        await handled
        assert took > 2, f"the fan-out took {took:.1f}s: too short to show anything"
        (notice,) = await _wait_for(_notifications(channel_to, holder), book_id, 1)
        assert notice.new_price == usd(3500)
    finally:
        await asyncio.to_thread(replica.stop)
        await asyncio.sleep(ConsumerPolicy().wait_seconds + 1)  # its last long poll
        for made in (queue, dead_letters):
            await book_holders.sqs.delete_queue(QueueUrl=made.url)


async def test_a_book_update_without_a_price_change_notifies_nobody(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    book_holders: Aws,
    price_change_tap: Callable[[int], Any],
    otlp: OtlpReceiver,
) -> None:
    # Past the rule (a rule changed by hand, a replay): the consumer itself ignores it.
    holder = new_user()
    book_id = await _listed_book(catalog, 1200)
    await _change_price(catalog, book_id, 1100)
    event = json.loads(await price_change_tap(book_id))
    await book_holders.hold(book_id, holder)
    event["detail"]["id"] = str(uuid.uuid4())
    event["detail"]["data"]["price_changed"] = False
    event["detail"]["data"]["changed_fields"] = ["title"]
    url = await book_holders.queue_url()
    sent = await book_holders.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    await _handled(otlp, {sent["MessageId"]})
    assert await _all(_notifications(channel_to, holder)) == []


async def test_a_malformed_message_goes_to_the_dead_letter_queue_unlogged(
    stack: Stack, book_holders: Aws
) -> None:
    marker = f"shopper-{secrets.token_hex(6)}@example.com"
    bodies = {
        f"not json {marker}",
        json.dumps(
            {
                "detail": {
                    "id": str(uuid.uuid4()),
                    "type": "book.updated",
                    "data_type": "cloudshelf.catalog.v1.BookUpdatedEvent",
                    "occurred_at": "2026-11-26T04:00:00Z",
                    "data": {"book_id": marker, "price_changed": True},
                }
            }
        ),
    }
    url = await book_holders.queue_url()
    for body in bodies:
        await book_holders.sqs.send_message(QueueUrl=url, MessageBody=body)
    dead_letters = await book_holders.queue_url(f"{book_holders.queue_name}-dlq")
    arrived: set[str] = set()
    deadline = time.monotonic() + 30
    while arrived != bodies and time.monotonic() < deadline:
        answer = await book_holders.sqs.receive_message(
            QueueUrl=dead_letters, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in answer.get("Messages", []):
            if message["Body"] in bodies:
                arrived.add(message["Body"])
                await book_holders.sqs.delete_message(
                    QueueUrl=dead_letters, ReceiptHandle=message["ReceiptHandle"]
                )
    assert arrived == bodies, "the malformed messages did not reach the dead-letter queue"
    log = stack.services["cart"].log_file.read_text()
    assert "is malformed" in log and marker not in log


async def test_provisioning_routes_price_changes_to_a_queue_with_dead_letters(
    stack: Stack, aws: Aws
) -> None:
    settings = stack.settings("cart")
    # Again, as every deployment does: the same resources, nothing duplicated.
    await provision(settings)
    url = await aws.queue_url()
    attributes = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
        "Attributes"
    ]
    dead_letters = await aws.queue_url(f"{aws.queue_name}-dlq")
    dead_letters_arn = (
        await aws.sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])
    )["Attributes"]["QueueArn"]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead_letters_arn,
        "maxReceiveCount": 5,
    }
    rule = await aws.events.describe_rule(Name=aws.queue_name, EventBusName=settings.event_bus)
    assert json.loads(rule["EventPattern"]) == PRICE_CHANGES_PATTERN
    targets = await aws.events.list_targets_by_rule(
        Rule=aws.queue_name, EventBusName=settings.event_bus
    )
    assert [t["Arn"] for t in targets["Targets"]] == [attributes["QueueArn"]]
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule["Arn"]}}


# --- NotificationService ------------------------------------------------------------------


async def _notified(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    holders: Aws,
    owner: User,
    changes: int,
) -> list[cart_pb2.Notification]:
    """`changes` price changes of a book the owner holds, and their notifications."""
    book_id = await _listed_book(catalog, 1000)
    await holders.hold(book_id, owner)
    for step in range(1, changes + 1):
        await _change_price(catalog, book_id, 1000 + step)
    return await _wait_for(_notifications(channel_to, owner), book_id, changes)


async def test_notifications_are_listed_newest_first_in_pages(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    book_holders: Aws,
) -> None:
    owner, other = new_user(), new_user()
    everything = await _notified(catalog, channel_to, book_holders, owner, 5)
    # Newest first: the last change (to 1005) leads.
    assert [n.new_price.minor_units for n in everything] == [1005, 1004, 1003, 1002, 1001]
    assert [n.old_price.minor_units for n in everything] == [1004, 1003, 1002, 1001, 1000]

    stub = _notifications(channel_to, owner)
    pages: list[list[cart_pb2.Notification]] = []
    token = last_token = ""
    while True:
        page = await stub.ListNotifications(
            cart_pb2.ListNotificationsRequest(page_size=2, page_token=token), timeout=10
        )
        pages.append(list(page.notifications))
        token = page.next_page_token
        if not token:
            break
        last_token = token
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [n for page in pages for n in page] == everything

    # A token continues only the list it was made for: not another filter, not another owner.
    assert (
        await _reason(
            stub.ListNotifications(
                cart_pb2.ListNotificationsRequest(page_token=last_token, unread_only=True)
            )
        )
        == "INVALID_ARGUMENT INVALID_PAGE_TOKEN"
    )
    assert (
        await _reason(
            _notifications(channel_to, other).ListNotifications(
                cart_pb2.ListNotificationsRequest(page_token=last_token)
            )
        )
        == "INVALID_ARGUMENT INVALID_PAGE_TOKEN"
    )
    await expect_error(
        stub.ListNotifications(cart_pb2.ListNotificationsRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )


async def test_only_the_owner_sees_and_marks_their_notifications(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    book_holders: Aws,
) -> None:
    owner, other = new_user(), new_user()
    notices = await _notified(catalog, channel_to, book_holders, owner, 3)
    ids = [n.id for n in notices]
    mine, theirs = _notifications(channel_to, owner), _notifications(channel_to, other)

    # Another owner sees none of them, and cannot mark them: NOT_FOUND, nothing touched.
    assert await _all(theirs) == []
    assert (
        await _reason(
            theirs.MarkNotificationsRead(
                cart_pb2.MarkNotificationsReadRequest(notification_ids=ids[:1])
            )
        )
        == "NOT_FOUND NOTIFICATION_NOT_FOUND"
    )
    await theirs.MarkNotificationsRead(cart_pb2.MarkNotificationsReadRequest(all=True))
    assert [n.read for n in await _all(mine)] == [False, False, False]
    # No caller, no notifications.
    await expect_error(
        _notifications(channel_to, None).ListNotifications(cart_pb2.ListNotificationsRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
    )

    # One unknown id among mine: all or none.
    assert (
        await _reason(
            mine.MarkNotificationsRead(
                cart_pb2.MarkNotificationsReadRequest(notification_ids=[ids[0], "no-such-id"])
            )
        )
        == "NOT_FOUND NOTIFICATION_NOT_FOUND"
    )
    assert len(await _all(mine, unread_only=True)) == 3

    # By id, repeats counted once; again changes nothing.
    for _ in range(2):
        await mine.MarkNotificationsRead(
            cart_pb2.MarkNotificationsReadRequest(notification_ids=[ids[0], ids[0], ids[2]])
        )
        assert [n.read for n in await _all(mine)] == [True, False, True]
    assert [n.id for n in await _all(mine, unread_only=True)] == [ids[1]]

    # All of them; again changes nothing.
    for _ in range(2):
        await mine.MarkNotificationsRead(cart_pb2.MarkNotificationsReadRequest(all=True))
        assert await _all(mine, unread_only=True) == []
        assert [n.id for n in await _all(mine) if n.read] == ids

    for request, field in (
        (cart_pb2.MarkNotificationsReadRequest(), "notification_ids"),
        (cart_pb2.MarkNotificationsReadRequest(notification_ids=ids[:1], all=True), "all"),
        (cart_pb2.MarkNotificationsReadRequest(notification_ids=["x"] * 101), "notification_ids"),
        (cart_pb2.MarkNotificationsReadRequest(notification_ids=[""]), "notification_ids[0]"),
    ):
        await expect_error(
            mine.MarkNotificationsRead(request), grpc.StatusCode.INVALID_ARGUMENT, field
        )


# --- end to end, through the cart's stream processor ------------------------------------------


async def test_shoppers_carts_reach_the_notifications_through_the_stream(
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    channel_to: ChannelTo,
    new_user: NewUser,
    aws: Aws,
) -> None:
    """End to end with the stream processor: AddItem -> cart stream -> BookHolders; then a
    price change -> a notification for each shopper whose cart holds the book."""
    first, second, elsewhere = new_user(), new_user(), new_user()
    book_id = await _listed_book(catalog, 3000)
    other_book = await _listed_book(catalog, 700)
    for shopper, held in ((first, book_id), (second, book_id), (elsewhere, other_book)):
        carts = cart_pb2_grpc.CartServiceStub(channel_to("cart", shopper.token))
        await carts.AddItem(cart_pb2.AddItemRequest(book_id=held, quantity=1), timeout=10)
    # The index follows the carts' stream asynchronously: change the price once it holds
    # both shoppers, or the change would rightly reach nobody.
    deadline = time.monotonic() + 30
    while not (await aws.holds(book_id, first) and await aws.holds(book_id, second)):
        assert time.monotonic() < deadline, "the stream processor did not index the carts"
        await asyncio.sleep(0.2)
    await _change_price(catalog, book_id, 2700)

    for shopper in (first, second):
        (notice,) = await _wait_for(_notifications(channel_to, shopper), book_id, 1, 30)
        assert notice.old_price == usd(3000) and notice.new_price == usd(2700)
    assert await _all(_notifications(channel_to, elsewhere)) == []
