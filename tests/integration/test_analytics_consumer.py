"""The analytics consumer worker (issue 19, item 2 and the warehouse sink): records put into
Kinesis land in the warehouse exactly once, through kills, replicas and malformed records.

Records are put with boto3 against the stack's emulator, encoded with records.encode, as
the ingest and the bus forwarder put them. Tests that kill workers run their own workers on
a stream and a lease table of their own, beside the stack's worker on the real stream."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import pytest_asyncio

from cloudshelf.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from cloudshelf.devstack.components import ManagedProcess, free_port, wait_until
from cloudshelf.devstack.stack import Stack, health_status
from services.analytics import records
from services.analytics.consumer import CheckpointMoved, Consumer, ConsumerSettings
from services.analytics.leases import LeaseTable
from tests.conftest import ChannelTo, expect_error
from tests.integration.test_analytics_sinks import compact, lake_dataset

WORKER = "analytics-consumer"


def interaction(book_id: int = 7, **fields: Any) -> dict[str, Any]:
    """An interaction.recorded envelope as RecordInteractions puts it (id = interaction_id)."""
    interaction_id = str(uuid.uuid4())
    data = {
        "interaction_id": interaction_id,
        "book_id": str(book_id),
        "user_id": "user-1",
        "session_id": "session-1",
        "type": "INTERACTION_TYPE_VIEW",
        "time": "2026-11-26T10:15:00Z",
        "page_view_duration_seconds": 12,
        "came_from": "search",
        "device_type": "mobile",
        **fields,
    }
    return {
        "id": interaction_id,
        "type": "interaction.recorded",
        "source": "cloudshelf.analytics",
        "data_type": "cloudshelf.analytics.v1.Interaction",
        "data": data,
    }


def envelope(event_type: str, subject: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "source": "cloudshelf.test",
        "subject": subject,
        "aggregate_version": str(version),
        "occurred_at": "2026-11-26T10:00:00Z",
        "data": data,
    }


def usd(minor: int) -> dict[str, Any]:
    return {"minor_units": str(minor), "currency_code": "USD"}


class Kinesis:
    def __init__(self, stack: Stack) -> None:
        self.client = boto3.client(
            "kinesis",
            endpoint_url=stack.aws.url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def new_stream(self, shards: int) -> str:
        name = f"test-analytics-{secrets.token_hex(4)}"
        self.client.create_stream(StreamName=name, ShardCount=shards)
        self.client.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
        )
        return name

    def put(self, stream: str, items: Sequence[bytes | dict[str, Any]]) -> list[str]:
        """Puts records (envelopes, or raw bytes as they are); their sequence numbers."""
        sequence_numbers = []
        for start in range(0, len(items), 500):
            entries = [
                {
                    "Data": item if isinstance(item, bytes) else records.encode(item),
                    "PartitionKey": secrets.token_hex(8),
                }
                for item in items[start : start + 500]
            ]
            response = self.client.put_records(StreamName=stream, Records=entries)
            assert response.get("FailedRecordCount", 0) == 0
            sequence_numbers += [r["SequenceNumber"] for r in response["Records"]]
        return sequence_numbers


@pytest.fixture
def kinesis(stack: Stack) -> Kinesis:
    return Kinesis(stack)


@pytest_asyncio.fixture
async def warehouse(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.postgres.dsn("analytics"))
    yield conn
    await conn.close()


class Workers:
    """Consumer worker processes of one test, on a stream and a lease table of its own."""

    def __init__(self, stack: Stack, state_dir: Path, stream: str) -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.stream = stream
        self.lease_table = f"{stream}-leases"
        self.started: list[ManagedProcess] = []
        self.dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=stack.aws.url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def start(self, name: str, **overrides: str) -> tuple[ManagedProcess, str]:
        address = f"127.0.0.1:{free_port()}"
        env = self.stack.worker_env(
            WORKER,
            {
                "CLOUDSHELF_LISTEN_ADDR": address,
                "CLOUDSHELF_ANALYTICS_STREAM": self.stream,
                "CLOUDSHELF_ANALYTICS_LEASE_TABLE": self.lease_table,
                "CLOUDSHELF_ANALYTICS_WORKER_ID": name,
                **overrides,
            },
        )
        process = ManagedProcess(
            f"{name}-{secrets.token_hex(3)}",
            [sys.executable, "-m", "services.analytics.consumer"],
            self.state_dir,
            env,
        )
        process.start()
        self.started.append(process)
        wait_until(lambda: health_status(address) == "SERVING", 30, f"{name} serving")
        return process, address

    def owners(self) -> dict[str, str | None]:
        """Shard id -> the worker holding its lease (None: free)."""
        items = self.dynamodb.scan(TableName=self.lease_table, ConsistentRead=True)["Items"]
        return {
            item["leaseKey"]["S"]: item["leaseOwner"]["S"] if "leaseOwner" in item else None
            for item in items
        }

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


WorkersFor = Callable[[str], Workers]


@pytest.fixture
def workers_for(stack: Stack, tmp_path: Path) -> Iterator[WorkersFor]:
    made: list[Workers] = []

    def make(stream: str) -> Workers:
        workers = Workers(stack, tmp_path, stream)
        made.append(workers)
        return workers

    yield make
    for workers in made:
        workers.stop_all()


async def count_interactions(conn: asyncpg.Connection, ids: Sequence[str]) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM analytics.fact_book_interactions "
            "WHERE interaction_id = ANY($1::text[])",
            list(ids),
        )
    )


async def wait_for_count(
    conn: asyncpg.Connection, ids: Sequence[str], expected: int, within: float = 60.0
) -> int:
    deadline = time.monotonic() + within
    count = 0
    while time.monotonic() < deadline:
        count = await count_interactions(conn, ids)
        if count >= expected:
            return count
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} of {expected} interactions in the warehouse after {within}s")


async def wait_for(predicate: Callable[[], Any], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached after {within}s")


# --- through the stack's own worker on the real stream ------------------------------------


async def test_every_kind_of_event_lands_once_in_the_warehouse(
    stack: Stack, kinesis: Kinesis, warehouse: asyncpg.Connection
) -> None:
    assert health_status(stack.worker_address(WORKER)) == "SERVING"
    stream = stack.settings("analytics").analytics_stream
    book_id = 900_000 + secrets.randbelow(99_999)
    category_id = 800_000 + secrets.randbelow(99_999)
    views = [interaction(book_id) for _ in range(300)]
    cart_add = interaction(
        book_id, type="INTERACTION_TYPE_ADD_TO_CART", value=usd(1999), page_view_duration_seconds=0
    )
    order_id = str(uuid.uuid4())
    line = {
        "book_id": str(book_id),
        "title": "A book",
        "unit_price": usd(1999),
        "quantity": 2,
        "line_total": usd(3998),
        "category_id": str(category_id),
    }
    placed_order = {
        "id": order_id,
        "user_id": "user-1",
        "status": "ORDER_STATUS_PLACED",
        "lines": [line],
        "total_items": 2,
        "subtotal": usd(3998),
        "discount": usd(0),
        "tax": usd(320),
        "shipping": usd(499),
        "total": usd(4817),
        "payment_method": "PAYMENT_METHOD_CREDIT_CARD",
        "create_time": "2026-11-26T10:20:00Z",
    }
    recorded_order_id = f"rec-{secrets.token_hex(6)}"
    recorded = {
        "order_id": recorded_order_id,
        "user_id": "user-2",
        "order_time": "2026-11-26T10:30:00Z",
        "total_amount": usd(1500),
        "total_items": 1,
        "payment_method": "PAYMENT_METHOD_CARD",
        "order_status": "ORDER_STATUS_PAID",
        "device_type": "desktop",
    }
    book = {
        "id": str(book_id),
        "title": "Old title",
        "price": usd(1999),
        "category_id": str(category_id),
        "format": "BOOK_FORMAT_PAPERBACK",
        "language_code": "en",
        "publication_date": {"year": 2021, "month": 3, "day": 1},
        "authors": [{"author_id": "1", "display_name": "Ann Author", "order_index": 0}],
    }
    newer_book = {**book, "title": "New title", "price": usd(2999)}
    events = [
        envelope(
            "category.created",
            str(category_id),
            1,
            {"category": {"id": str(category_id), "name": "Poetry"}},
        ),
        *views,
        cart_add,
        envelope("book.created", str(book_id), 1, {"book": book}),
        envelope(
            "book.updated",
            str(book_id),
            3,
            {"book_id": str(book_id), "before": book, "after": newer_book},
        ),
        # An older update arriving late changes nothing.
        envelope(
            "book.updated",
            str(book_id),
            2,
            {"book_id": str(book_id), "before": book, "after": {**book, "title": "Stale"}},
        ),
        envelope("order.placed", order_id, 1, {"order": placed_order}),
        envelope("order.recorded", recorded_order_id, 0, recorded),
        envelope("inventory.adjusted", str(book_id), 4, {"book_id": str(book_id), "delta": -2}),
    ]
    kinesis.put(stream, events)
    # Delivered twice (a producer's retry): nothing doubles.
    kinesis.put(stream, [*views[:50], events[-3]])
    kinesis.put(
        stream,
        [
            envelope(
                "order.cancelled",
                order_id,
                2,
                {"order": {**placed_order, "status": "ORDER_STATUS_CANCELLED"}},
            )
        ],
    )
    ids = [e["id"] for e in [*views, cart_add]]
    assert await wait_for_count(warehouse, ids, 301) == 301

    async def cancelled() -> bool:
        status = await warehouse.fetchval(
            "SELECT order_status FROM analytics.fact_orders WHERE order_id = $1", order_id
        )
        return bool(status == "cancelled")

    await wait_for(cancelled, "the order cancelled")
    order = await warehouse.fetchrow(
        "SELECT * FROM analytics.fact_orders WHERE order_id = $1", order_id
    )
    assert (order["total_amount_minor"], order["tax_amount_minor"], order["currency"]) == (
        4817,
        320,
        "USD",
    )
    assert order["payment_method"] == "credit_card"
    assert str(order["order_date"]) == "2026-11-26"
    lines = await warehouse.fetch(
        "SELECT book_id, category_name, quantity, revenue_minor, currency "
        "FROM analytics.fact_order_lines WHERE order_id = $1",
        order_id,
    )
    assert [tuple(r) for r in lines] == [(book_id, "Poetry", 2, 3998, "USD")]
    other = await warehouse.fetchrow(
        "SELECT order_status, payment_method, total_amount_minor FROM analytics.fact_orders "
        "WHERE order_id = $1",
        recorded_order_id,
    )
    assert tuple(other) == ("paid", "card", 1500)
    dim = await warehouse.fetchrow(
        "SELECT title, category_name, author_names, price_range, publication_year, format, "
        "aggregate_version FROM analytics.dim_books WHERE book_id = $1",
        book_id,
    )
    assert tuple(dim) == ("New title", "Poetry", "Ann Author", "high", 2021, "paperback", 3)
    added = await warehouse.fetchrow(
        "SELECT interaction_type, value_minor, currency, page_view_duration "
        "FROM analytics.fact_book_interactions WHERE interaction_id = $1",
        cart_add["id"],
    )
    assert tuple(added) == ("add_to_cart", 1999, "USD", None)

    # A line whose category the warehouse has not heard of yet gets its name once it does.
    late_category = category_id + 1
    late_order_id = str(uuid.uuid4())
    late_order = {
        **placed_order,
        "id": late_order_id,
        "lines": [{**line, "category_id": str(late_category)}],
    }
    kinesis.put(stream, [envelope("order.placed", late_order_id, 1, {"order": late_order})])

    async def line_category() -> Any:
        return await warehouse.fetchval(
            "SELECT category_name FROM analytics.fact_order_lines WHERE order_id = $1",
            late_order_id,
        )

    await wait_for(lambda: _equals(line_category(), "unknown"), "the line, category unknown")
    name = {"category": {"id": str(late_category), "name": "Drama"}}
    kinesis.put(stream, [envelope("category.created", str(late_category), 1, name)])
    await wait_for(lambda: _equals(line_category(), "Drama"), "the line's category named")


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_malformed_record_is_dead_lettered_and_the_rest_flows(
    stack: Stack,
    kinesis: Kinesis,
    warehouse: asyncpg.Connection,
    channel_to: ChannelTo,
    shopper_token: str,
    service_token: str,
) -> None:
    stream = stack.settings("analytics").analytics_stream
    good = [interaction() for _ in range(20)]
    not_json = b"\xffnot json at all"
    invalid = interaction(book_id=0)  # an envelope, but no book the warehouse can hold
    sequence_numbers = kinesis.put(stream, [good[0], not_json, invalid, *good[1:]])
    assert await wait_for_count(warehouse, [e["id"] for e in good], 20) == 20
    letters = {
        r["sequence_number"]: r
        for r in await warehouse.fetch(
            "SELECT sequence_number, data, reason, event_id FROM analytics.dead_letters "
            "WHERE sequence_number = ANY($1::text[])",
            sequence_numbers[1:3],
        )
    }
    assert bytes(letters[sequence_numbers[1]]["data"]) == not_json
    assert letters[sequence_numbers[1]]["reason"].startswith("not JSON")
    assert letters[sequence_numbers[2]]["event_id"] == invalid["id"]
    assert "book_id" in letters[sequence_numbers[2]]["reason"]
    assert await count_interactions(warehouse, [invalid["id"]]) == 0

    admin = analytics_pb2_grpc.AnalyticsServiceStub(channel_to("analytics"))
    listed: dict[str, analytics_pb2.DeadLetter] = {}
    token = ""
    while True:
        page = await admin.ListDeadLetters(
            analytics_pb2.ListDeadLettersRequest(page_size=2, page_token=token), timeout=10
        )
        assert len(page.dead_letters) <= 2
        listed.update({d.sequence_number: d for d in page.dead_letters})
        token = page.next_page_token
        if not token or all(s in listed for s in sequence_numbers[1:3]):
            break
    shown = listed[sequence_numbers[1]]
    assert shown.data == not_json and shown.stream_name == stream
    assert shown.reason.startswith("not JSON") and shown.arrival_time.seconds > 0
    assert listed[sequence_numbers[2]].event_type == "interaction.recorded"
    for token_of_caller in (shopper_token, service_token):
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel_to("analytics", token_of_caller))
        await expect_error(
            stub.ListDeadLetters(analytics_pb2.ListDeadLettersRequest(), timeout=10),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    await expect_error(
        admin.ListDeadLetters(
            analytics_pb2.ListDeadLettersRequest(page_token="forged.token"), timeout=10
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )


# --- own workers on own streams: kills, replicas -------------------------------------------


async def test_a_worker_killed_mid_batch_and_restarted_loses_and_duplicates_nothing(
    stack: Stack, kinesis: Kinesis, warehouse: asyncpg.Connection, workers_for: WorkersFor
) -> None:
    stream = kinesis.new_stream(2)
    workers = workers_for(stream)
    events = [interaction(book_id=1 + i % 50) for i in range(6000)]
    ids = [e["id"] for e in events]
    kinesis.put(stream, events)
    # Small batches: the kill lands between and inside many of them.
    first, _ = workers.start("first", CLOUDSHELF_ANALYTICS_BATCH_RECORDS="100")
    landed = await wait_for_count(warehouse, ids, 1, within=30)
    first.signal(signal.SIGKILL)
    first.stop()
    landed = await count_interactions(warehouse, ids)
    assert 0 < landed < len(events), "the kill must come mid-stream"
    # Restarted under the same worker id (a fixed CLOUDSHELF_ANALYTICS_WORKER_ID): it takes
    # back the leases still in its name at once, without waiting for them to expire.
    workers.start("first")
    assert await wait_for_count(warehouse, ids, len(events), within=30) == len(events)
    # Every shard's checkpoint is its last record: nothing is left to read again.
    checkpoints = await warehouse.fetch(
        "SELECT shard_id, sequence_number FROM analytics.consumer_checkpoints "
        "WHERE split_part(stream_name, '@', 1) = $1",
        stream,
    )
    for row in checkpoints:
        shard_iterator = kinesis.client.get_shard_iterator(
            StreamName=stream,
            ShardId=row["shard_id"],
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            StartingSequenceNumber=row["sequence_number"],
        )["ShardIterator"]
        assert kinesis.client.get_records(ShardIterator=shard_iterator)["Records"] == []
    assert len(checkpoints) == 2
    await asyncio.sleep(1)
    assert await count_interactions(warehouse, ids) == len(events)

    # The lake: every event (a batch replayed after the kill may have written some twice,
    # in files cut elsewhere), then exactly once when compaction has merged their hours.
    bucket = stack.settings("analytics").data_lake_bucket

    def in_lake() -> pa.Table:
        return lake_dataset(stack, bucket).to_table(
            filter=pc.field("id").isin(ids), columns=["id", "date", "hour"]
        )

    raw = await asyncio.to_thread(in_lake)
    assert len(set(raw.column("id").to_pylist())) == len(events)
    hours = set(zip(raw["date"].to_pylist(), raw["hour"].to_pylist(), strict=True))
    for date, hour in sorted(hours):
        start = datetime.fromisoformat(f"{date}T{hour:02d}:00+00:00")
        done = await compact(stack, start)
        assert done.returncode == 0, done.stderr
    compacted = await asyncio.to_thread(in_lake)
    assert compacted.num_rows == len(set(compacted.column("id").to_pylist())) == len(events)


async def test_two_replicas_share_the_shards_and_a_killed_ones_are_taken_over(
    kinesis: Kinesis, warehouse: asyncpg.Connection, workers_for: WorkersFor
) -> None:
    stream = kinesis.new_stream(4)
    workers = workers_for(stream)
    alpha, _ = workers.start("alpha")

    async def alpha_holds_all() -> bool:
        return set(workers.owners().values()) == {"alpha"}

    await wait_for(alpha_holds_all, "alpha holding every shard")
    beta, _ = workers.start("beta")

    async def shared() -> bool:
        owners = list(workers.owners().values())
        return owners.count("alpha") == 2 and owners.count("beta") == 2

    await wait_for(shared, "two shards each", within=30)
    before = [interaction() for _ in range(400)]
    kinesis.put(stream, before)
    assert await wait_for_count(warehouse, [e["id"] for e in before], 400) == 400

    beta.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await wait_for(alpha_holds_all, "alpha taking beta's shards", within=30)
    assert time.monotonic() - killed_at < 30
    after = [interaction() for _ in range(400)]
    kinesis.put(stream, after)
    everything = [e["id"] for e in [*before, *after]]
    assert await wait_for_count(warehouse, everything, 800, within=30) == 800
    beta.stop()

    # A graceful stop (SIGTERM) frees its leases at once.
    alpha.stop()
    assert set(workers.owners().values()) == {None}


async def test_a_resharded_streams_closed_parent_is_read_to_its_end(
    kinesis: Kinesis, warehouse: asyncpg.Connection, workers_for: WorkersFor
) -> None:
    stream = kinesis.new_stream(1)
    workers = workers_for(stream)
    before = [interaction() for _ in range(200)]
    kinesis.put(stream, before)
    kinesis.client.update_shard_count(
        StreamName=stream, TargetShardCount=2, ScalingType="UNIFORM_SCALING"
    )
    kinesis.client.get_waiter("stream_exists").wait(StreamName=stream)
    after = [interaction() for _ in range(200)]
    kinesis.put(stream, after)
    workers.start("solo", CLOUDSHELF_ANALYTICS_LEASE_SECONDS="3")
    ids = [e["id"] for e in [*before, *after]]
    assert await wait_for_count(warehouse, ids, 400, within=60) == 400
    shards = kinesis.client.list_shards(StreamName=stream)["Shards"]
    closed = {s["ShardId"] for s in shards if "EndingSequenceNumber" in s["SequenceNumberRange"]}
    assert closed, "the resharding closed the parent"

    async def parents_finished() -> bool:
        rows = await warehouse.fetch(
            "SELECT shard_id FROM analytics.consumer_checkpoints "
            "WHERE split_part(stream_name, '@', 1) = $1 AND finished",
            stream,
        )
        return closed <= {r["shard_id"] for r in rows}

    # Marked finished by the read after its last batch, a moment after the rows land.
    await wait_for(parents_finished, "the closed parent marked finished", within=10)


# --- fencing: the checkpoint decides what is written ----------------------------------------


class RecordingSink:
    """A sink that remembers what it was given (or fails, to show the checkpoint waits)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[str] = []

    async def write(self, events: Sequence[records.StreamEvent]) -> None:
        if self.fail:
            raise OSError("sink unreachable")
        self.written += [e.id for e in events]


def kinesis_records(items: Sequence[bytes | dict[str, Any]], first: int) -> list[dict[str, Any]]:
    return [
        {
            "Data": item if isinstance(item, bytes) else records.encode(item),
            "SequenceNumber": str(first + i),
            "ApproximateArrivalTimestamp": datetime.now(UTC),
        }
        for i, item in enumerate(items)
    ]


async def test_a_replica_that_lost_its_shard_cannot_write_over_the_new_owner(
    stack: Stack, warehouse: asyncpg.Connection
) -> None:
    pool = await asyncpg.create_pool(stack.postgres.dsn("analytics"), min_size=1, max_size=2)
    try:
        stream = f"fencing-{secrets.token_hex(4)}"
        sink = RecordingSink()

        def replica(name: str, sinks: Sequence[records.Sink]) -> Consumer:
            settings = ConsumerSettings(stream=stream, worker_id=name)
            return Consumer(pool, None, LeaseTable(None, "unused"), settings, sinks)

        old, new = replica("old", [sink]), replica("new", [sink])
        first = [interaction() for _ in range(3)]
        await old.write_batch("shard-0", None, "3", kinesis_records(first, 1), False)
        # Both read on from checkpoint 3: the new owner writes first, the old one is late.
        by_new = [interaction() for _ in range(3)]
        by_old = [interaction() for _ in range(3)]
        await new.write_batch("shard-0", "3", "6", kinesis_records(by_new, 4), False)
        with pytest.raises(CheckpointMoved):
            await old.write_batch(
                "shard-0", "3", "6", kinesis_records([*by_old, b"junk"], 4), False
            )
        assert await count_interactions(warehouse, [e["id"] for e in [*first, *by_new]]) == 6
        # Nothing of the stale batch stayed: no fact, no dead letter.
        assert await count_interactions(warehouse, [e["id"] for e in by_old]) == 0
        assert not await warehouse.fetchval(
            "SELECT count(*) FROM analytics.dead_letters WHERE stream_name = $1", stream
        )
        row = await warehouse.fetchrow(
            "SELECT sequence_number, owner FROM analytics.consumer_checkpoints "
            "WHERE split_part(stream_name, '@', 1) = $1 AND shard_id = 'shard-0'",
            stream,
        )
        assert tuple(row) == ("6", "new")
        # A shard never checkpointed cannot be started twice either.
        with pytest.raises(CheckpointMoved):
            await new.write_batch("shard-0", None, "2", kinesis_records(first[:2], 1), False)

        # The other sinks are written before the checkpoint moves: a failing one leaves it.
        failing = replica("new", [RecordingSink(fail=True)])
        later = [interaction()]
        with pytest.raises(OSError):
            await failing.write_batch("shard-0", "6", "7", kinesis_records(later, 7), False)
        assert await count_interactions(warehouse, [later[0]["id"]]) == 0
        assert (
            await warehouse.fetchval(
                "SELECT sequence_number FROM analytics.consumer_checkpoints "
                "WHERE split_part(stream_name, '@', 1) = $1 AND shard_id = 'shard-0'",
                stream,
            )
            == "6"
        )
        assert by_new[0]["id"] in sink.written
    finally:
        await pool.close()
