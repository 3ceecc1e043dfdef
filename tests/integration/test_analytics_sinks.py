"""The Timestream and data lake sinks, against the stack's emulator.

The sinks are driven with batches of StreamEvents as the consumer hands them over (the
consumer itself is another stream of work). Timestream's writes are checked in the
emulator's own state (moto's /moto-api/data.json): moto stores what WriteRecords accepted
but answers no query. The lake is read back as a reader would: pyarrow.dataset over S3
with Hive partitioning.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aioboto3
import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import pytest_asyncio

from cloudshelf.devstack.stack import REPO_ROOT, Stack
from services.analytics.lake import (
    COMPACTED_NAME,
    Compaction,
    LakeSink,
    compact_hour,
    partition_prefix,
)
from services.analytics.records import StreamEvent
from services.analytics.sinks import open_sinks
from services.analytics.timestream import (
    CART_EVENTS_TABLE,
    MAX_RECORDS_PER_WRITE,
    TimestreamSink,
    WarehouseCategories,
)

pytestmark = pytest.mark.integration

ClientFactory = Callable[[str], Any]


@pytest_asyncio.fixture
async def aws(stack: Stack) -> AsyncIterator[ClientFactory]:
    """aws("s3") -> a client of the stack's emulator (closed after the test)."""
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    clients: list[Any] = []
    contexts: list[Any] = []

    async def open_client(name: str) -> Any:
        context = session.client(name, endpoint_url=stack.aws.url)
        contexts.append(context)
        client = await context.__aenter__()
        clients.append(client)
        return client

    yield open_client  # type: ignore[misc]
    for context in contexts:
        await context.__aexit__(None, None, None)


def event(
    event_type: str,
    at: datetime,
    data: dict[str, Any],
    sequence: int,
    shard: str = "shardId-000000000000",
) -> StreamEvent:
    envelope = {
        "id": secrets.token_hex(16),
        "type": event_type,
        "source": "cloudshelf.test",
        "subject": "user#someone",
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "aggregate_version": "3",
        "data_type": "cloudshelf.test.v1.Event",
        "data": data,
    }
    return StreamEvent(envelope, shard, str(sequence), at + timedelta(seconds=1))


def random_hour(year: int) -> datetime:
    return datetime(year, 1, 1, tzinfo=UTC) + timedelta(hours=secrets.randbelow(364 * 24))


# --- the data lake --------------------------------------------------------------------


def lake_dataset(stack: Stack, bucket: str) -> ds.Dataset:
    endpoint = urlsplit(stack.aws.url)
    filesystem = pafs.S3FileSystem(
        access_key="local",
        secret_key="local",
        region="us-east-1",
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
    )
    partitioning = ds.partitioning(
        pa.schema([("event_type", pa.string()), ("date", pa.string()), ("hour", pa.int32())]),
        flavor="hive",
    )
    return ds.dataset(
        f"{bucket}/raw", filesystem=filesystem, format="parquet", partitioning=partitioning
    )


def rows_of(dataset: ds.Dataset, event_type: str, hour: datetime) -> pa.Table:
    return dataset.to_table(
        filter=(pc.field("event_type") == event_type)
        & (pc.field("date") == hour.strftime("%Y-%m-%d"))
        & (pc.field("hour") == hour.hour)
    )


async def keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    listed = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


async def compact(stack: Stack, hour: datetime) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "cloudshelf.cli",
            "job",
            "compact-lake",
            "--hour",
            hour.isoformat(),
            "--hours",
            "1",
        ],
        env=stack.service_env("analytics"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_lake_reads_back_by_partition_and_compaction_drops_duplicates(
    stack: Stack, aws: ClientFactory
) -> None:
    s3 = await aws("s3")
    bucket = stack.settings("analytics").data_lake_bucket
    sink = LakeSink(s3, bucket)
    hour = random_hour(2020)
    added, viewed = "cart.item.added", "interaction.recorded"
    kinds = [added, added, viewed, added, added, viewed]
    events = [
        event(kind, hour + timedelta(minutes=n), {"book_id": str(n), "name": "Ünïcode"}, n + 1)
        for n, kind in enumerate(kinds)
    ]
    next_hour = event(added, hour + timedelta(hours=1), {"book_id": "9"}, 7)

    first_batch, replayed_batch = events[:4], events[3:]
    await sink.write(first_batch)
    await sink.write(first_batch)  # the same batch again: the same objects
    await sink.write([*replayed_batch, next_hour])  # a replay cut elsewhere: events[3] twice
    added_prefix = partition_prefix(added, hour)
    assert added_prefix == f"raw/event_type=cart.item.added/date={hour:%Y-%m-%d}/hour={hour:%H}/"
    assert await keys_under(s3, bucket, added_prefix) == [
        f"{added_prefix}shardId-000000000000-1-4.parquet",
        f"{added_prefix}shardId-000000000000-4-5.parquet",
    ]

    dataset = lake_dataset(stack, bucket)
    raw = rows_of(dataset, added, hour)
    assert raw.num_rows == 5 and len(set(raw.column("id").to_pylist())) == 4
    assert rows_of(dataset, viewed, hour).num_rows == 2
    assert rows_of(dataset, added, hour + timedelta(hours=1)).num_rows == 1

    done = await compact(stack, hour)
    assert done.returncode == 0, done.stderr
    assert "2 partitions compacted, 4 files merged, 6 rows (1 duplicates dropped)" in done.stdout
    assert await keys_under(s3, bucket, added_prefix) == [f"{added_prefix}{COMPACTED_NAME}"]

    dataset = lake_dataset(stack, bucket)
    compacted = rows_of(dataset, added, hour)
    expected = [e for e in events if e.type == added]
    assert compacted.column("id").to_pylist() == [e.id for e in expected]  # by time
    row = compacted.to_pylist()[0]
    assert json.loads(row["data"]) == {"book_id": "0", "name": "Ünïcode"}
    assert row["occurred_at"] == hour and row["type"] == added
    assert row["aggregate_version"] == 3 and row["source"] == "cloudshelf.test"
    assert row["shard_id"] == "shardId-000000000000" and row["sequence_number"] == "1"
    assert rows_of(dataset, viewed, hour).num_rows == 2
    # The next hour is not this run's.
    assert await keys_under(s3, bucket, partition_prefix(added, hour + timedelta(hours=1)))

    # Safe to re-run: nothing left to merge, the same rows.
    again = await compact(stack, hour)
    assert again.returncode == 0, again.stderr
    assert "0 partitions compacted" in again.stdout
    assert rows_of(lake_dataset(stack, bucket), added, hour).num_rows == 4

    # An event arriving late for the hour, and one replayed: merged in by the next run.
    late = event(added, hour + timedelta(minutes=59), {"book_id": "8"}, 8)
    await sink.write([events[0], late])
    assert (await compact(stack, hour)).returncode == 0
    final = rows_of(lake_dataset(stack, bucket), added, hour)
    assert final.num_rows == 5 and final.column("id").to_pylist()[-1] == late.id
    assert await keys_under(s3, bucket, added_prefix) == [f"{added_prefix}{COMPACTED_NAME}"]


async def test_compaction_streams_a_partition_larger_than_its_memory(
    stack: Stack, aws: ClientFactory
) -> None:
    """A partition of 3,000 events (and replays) compacted holding 400 rows at a time:
    every event once, by time, in row groups of 200, the small files gone; then late
    events merged into the compacted file, which is larger than the memory too."""
    s3 = await aws("s3")
    bucket = stack.settings("analytics").data_lake_bucket
    sink = LakeSink(s3, bucket)
    hour = random_hour(2020)
    kind = "cart.item.added"

    def events_at_random(count: int, first_sequence: int) -> list[StreamEvent]:
        return [
            event(
                kind,
                hour + timedelta(milliseconds=secrets.randbelow(3_600_000)),
                {"book_id": str(n)},
                first_sequence + n,
            )
            for n in range(count)
        ]

    events = events_at_random(3000, 1)
    for start in range(0, 3000, 250):  # the consumer's batches
        await sink.write(events[start : start + 250])
    await sink.write(events[1100:1400])  # a replay cut elsewhere: 300 duplicates
    prefix = partition_prefix(kind, hour)
    assert len(await keys_under(s3, bucket, prefix)) == 13

    done = await compact_hour(s3, bucket, hour, rows_in_memory=400)
    assert done == Compaction(partitions=1, files_merged=13, rows=3000, duplicates_dropped=300)
    assert await keys_under(s3, bucket, prefix) == [f"{prefix}{COMPACTED_NAME}"]

    def by_time(some: list[StreamEvent]) -> list[str]:
        return [e.id for e in sorted(some, key=lambda e: (e.envelope["occurred_at"], e.id))]

    compacted = rows_of(lake_dataset(stack, bucket), kind, hour)
    assert compacted.column("id").to_pylist() == by_time(events)
    stored = await s3.get_object(Bucket=bucket, Key=f"{prefix}{COMPACTED_NAME}")
    metadata = pq.ParquetFile(io.BytesIO(await stored["Body"].read())).metadata
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == [200] * 15

    late = events_at_random(500, 5001)
    await sink.write([*late, *events[:100]])  # late events, and a replay of old ones
    again = await compact_hour(s3, bucket, hour, rows_in_memory=400)
    assert again == Compaction(partitions=1, files_merged=1, rows=3500, duplicates_dropped=100)
    merged = rows_of(lake_dataset(stack, bucket), kind, hour)
    assert merged.column("id").to_pylist() == by_time([*events, *late])
    assert await keys_under(s3, bucket, prefix) == [f"{prefix}{COMPACTED_NAME}"]


# --- Timestream -------------------------------------------------------------------------


def emulator_records(stack: Stack, database: str) -> list[dict[str, Any]]:
    """What the emulator's CartEvents table holds (moto's state, not a query)."""
    with urllib.request.urlopen(f"{stack.aws.url}/moto-api/data.json", timeout=30) as reply:
        state = json.load(reply)
    tables = state["timestreamwrite"]["TimestreamTable"]
    # Every instance moto made, dropped ones included: the live table is the last one.
    table = [t for t in tables if t["name"] == CART_EVENTS_TABLE and t["db_name"] == database][-1]
    records: list[dict[str, Any]] = table["records"]
    return records


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    dimensions = {d["Name"]: d["Value"] for d in record["Dimensions"]}
    return (
        dimensions["EventType"],
        dimensions["BookCategory"],
        dimensions["Currency"],
        record["MeasureName"],
        record["MeasureValueType"],
        record["MeasureValue"],
        record["Time"],
        record["TimeUnit"],
        record["Version"],
    )


def money(minor: int) -> dict[str, str]:
    return {"minor_units": str(minor), "currency_code": "USD"}


async def test_cart_events_reach_timestream_once_per_category_and_rewrite_as_the_same_record(
    stack: Stack, aws: ClientFactory
) -> None:
    settings = stack.settings("analytics")
    database = settings.timestream_database
    base = 2_000_000_000 + secrets.randbelow(100_000_000)
    fiction, science, unknown = base, base + 1, base + 2
    pool = await asyncpg.create_pool(stack.postgres.dsn("analytics"), min_size=1, max_size=2)
    try:
        await pool.executemany(
            "INSERT INTO analytics.dim_books (book_id, title, category_name) VALUES ($1, $2, $3)",
            [(fiction, "A novel", "Fiction"), (science, "A treatise", "Science")],
        )
        timestream = await aws("timestream-write")
        # Provisioning made both tables (moto once dropped the first when making the second).
        listed = await timestream.list_tables(DatabaseName=database)
        assert {t["TableName"] for t in listed["Tables"]} >= {CART_EVENTS_TABLE, "BookInteractions"}
        # Old events (a replay, a consumer catching up) go to the magnetic store.
        described = await timestream.describe_table(
            DatabaseName=database, TableName=CART_EVENTS_TABLE
        )
        assert described["Table"]["MagneticStoreWriteProperties"]["EnableMagneticStoreWrites"]
        calls: list[int] = []

        def count_records(params: dict[str, Any], **_: Any) -> None:
            calls.append(len(params["Records"]))

        timestream.meta.events.register(
            "provide-client-params.timestream-write.WriteRecords", count_records
        )
        sink = TimestreamSink(timestream, database, WarehouseCategories(pool))

        hour = random_hour(2020)
        at = [hour + timedelta(minutes=n) for n in range(10)]
        owner = {"user_id": "someone"}
        cart_events = [
            event(
                "cart.item.added",
                at[0],
                {"owner": owner, "book_id": str(fiction), "quantity": 2, "unit_price": money(1299)},
                1,
            ),
            event(
                "cart.item.updated",
                at[1],
                {
                    "owner": owner,
                    "book_id": str(fiction),
                    "quantity": 1,
                    "previous_quantity": 2,
                    "unit_price": money(1299),
                },
                2,
            ),
            event(
                "cart.item.removed",
                at[2],
                {
                    "owner": owner,
                    "book_id": str(science),
                    "previous_quantity": 3,
                    "unit_price": money(500),
                },
                3,
            ),
            event(
                "cart.cleared",
                at[3],
                {
                    "owner": owner,
                    "removed": [
                        {"book_id": str(fiction), "quantity": 1, "unit_price": money(1299)},
                        {"book_id": str(science), "quantity": 2, "unit_price": money(500)},
                        {"book_id": str(unknown), "quantity": 1, "unit_price": money(100)},
                    ],
                },
                4,
            ),
            event(
                "cart.merged",
                at[4],
                {
                    "owner": owner,
                    "from_session_id": "s",
                    "merged": [
                        {
                            "book_id": str(fiction),
                            "quantity": 3,
                            "added_quantity": 1,
                            "unit_price": money(1299),
                        }
                    ],
                },
                5,
            ),
            event(
                "order.placed",
                at[5],
                {
                    "order": {
                        "id": "o-1",
                        "lines": [
                            {"book_id": str(fiction), "quantity": 2, "line_total": money(2598)},
                            {"book_id": str(science), "quantity": 1, "line_total": money(500)},
                        ],
                        "total": money(3098),
                    }
                },
                6,
            ),
            event("book.updated", at[6], {"book": {"id": str(fiction)}}, 7),  # not a cart event
        ]
        # Two adds of the same millisecond, book and category: still two records.
        twins = [
            event(
                "cart.item.added",
                at[7],
                {"owner": owner, "book_id": str(science), "quantity": 1, "unit_price": money(500)},
                8 + n,
            )
            for n in range(2)
        ]
        many = [
            event(
                "cart.item.added",
                at[8] + timedelta(milliseconds=n),
                {"owner": owner, "book_id": str(science), "quantity": 1, "unit_price": money(500)},
                10 + n,
            )
            for n in range(150)
        ]
        await sink.write([*cart_events, *twins, *many])
        # 9 records of the cart events, 2 twins, 150 adds: in calls of at most 100.
        assert sum(calls) == 161 and max(calls) == MAX_RECORDS_PER_WRITE

        start_ns = int(hour.timestamp()) * 10**9
        mine = [
            r
            for r in emulator_records(stack, database)
            if start_ns <= int(r["Time"]) < start_ns + 3600 * 10**9
        ]
        assert len(mine) == 161
        values = Counter((*k[:3], k[5]) for k in map(_key, mine))
        assert values == Counter(
            {
                ("cart.item.added", "Fiction", "USD", "2598"): 1,
                ("cart.item.updated", "Fiction", "USD", "-1299"): 1,
                ("cart.item.removed", "Science", "USD", "-1500"): 1,
                ("cart.cleared", "Fiction", "USD", "-1299"): 1,
                ("cart.cleared", "Science", "USD", "-1000"): 1,
                ("cart.cleared", "unknown", "USD", "-100"): 1,
                ("cart.merged", "Fiction", "USD", "1299"): 1,
                ("order.placed", "Fiction", "USD", "2598"): 1,
                ("order.placed", "Science", "USD", "500"): 1,
                ("cart.item.added", "Science", "USD", "500"): 152,
            }
        )
        assert all(r["MeasureName"] == "CartValue" and r["Version"] == 1 for r in mine)
        # The event's time: its millisecond, the id's offset below it.
        added = next(r for r in mine if _key(r)[:2] == ("cart.item.added", "Fiction"))
        assert int(added["Time"]) // 10**6 == int(at[0].timestamp() * 1000)
        # Every record is its own (dimensions, time, measure): Timestream keeps them all.
        assert len({_key(r)[:4] + _key(r)[6:8] for r in mine}) == 161

        # A rewrite (a replay after a crash) sends the very same records, which Timestream
        # keeps once (same dimensions, time, measure and version). moto appends instead of
        # upserting, so its table shows each record twice, identical.
        await sink.write(cart_events)
        again = [
            r
            for r in emulator_records(stack, database)
            if start_ns <= int(r["Time"]) < start_ns + 3600 * 10**9
        ]
        rewritten = Counter(map(_key, again)) - Counter(map(_key, mine))
        first = Counter(map(_key, mine))
        assert sum(rewritten.values()) == 9
        assert all(first[key] == 1 for key in rewritten)
    finally:
        await pool.close()


async def test_the_consumers_sinks_write_one_batch_to_timestream_and_the_lake(
    stack: Stack,
) -> None:
    settings = stack.settings("analytics")
    hour = random_hour(2020)
    added = event(
        "cart.item.added",
        hour + timedelta(minutes=1),
        {"book_id": "1", "quantity": 1, "unit_price": money(700)},
        1,
    )
    viewed = event("interaction.recorded", hour + timedelta(minutes=2), {"book_id": "1"}, 2)
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
    try:
        async with AsyncExitStack() as stack_of_clients:
            for sink in await open_sinks(settings, pool, stack_of_clients):
                await sink.write([added, viewed])
    finally:
        await pool.close()
    start_ns = int(hour.timestamp()) * 10**9
    written = [
        _key(r)
        for r in emulator_records(stack, settings.timestream_database)
        if start_ns <= int(r["Time"]) < start_ns + 3600 * 10**9
    ]
    assert [(*k[:3], k[5]) for k in written] == [("cart.item.added", "unknown", "USD", "700")]
    dataset = lake_dataset(stack, settings.data_lake_bucket)
    assert rows_of(dataset, "cart.item.added", hour).column("id").to_pylist() == [added.id]
    assert rows_of(dataset, "interaction.recorded", hour).column("id").to_pylist() == [viewed.id]
