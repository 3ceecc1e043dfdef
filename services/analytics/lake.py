"""The S3 data lake: every raw event of the analytics log as Parquet, Hive-partitioned.

Layout (settings.data_lake_bucket), readable as is by Athena, Spark, DuckDB or
pyarrow.dataset with Hive partitioning:

    raw/event_type=<type>/date=YYYY-MM-DD/hour=HH/<file>.parquet

The partition is the event's own time (occurred_at, UTC; the stream's arrival time when
the envelope has none). The type is URI-encoded in the path (readers decode it; dotted
types such as cart.item.added are unchanged). Every file has the schema RAW_SCHEMA: the
envelope's fields, `data` as its JSON text (one stable column, whatever the type's data),
and where the record was read (shard, sequence number, arrival).

Writes are idempotent per batch: the sink names each file after the shard and the first
and last sequence numbers of the events it holds, so a batch read again after a crash
overwrites the same objects. A replay that cuts batches differently leaves duplicates in
small files; compaction (`cloudshelf job compact-lake`) merges an hour's small files into
one file per partition, keeping one row per event id, then deletes the small files. Until
an hour is compacted, readers that need exact counts take distinct ids.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.analytics.records import StreamEvent

log = logging.getLogger(__name__)

RAW_PREFIX = "raw/"
COMPACTED_NAME = "compacted.parquet"
# Rows per Parquet row group: readers skip by row group statistics (occurred_at, id).
ROW_GROUP_SIZE = 100_000

RAW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC")),
        pa.field("aggregate_version", pa.int64()),
        pa.field("data_type", pa.string()),
        # The envelope's data object as JSON text (Athena: json_extract; DuckDB: ->>).
        pa.field("data", pa.string()),
        pa.field("traceparent", pa.string()),
        pa.field("shard_id", pa.string()),
        pa.field("sequence_number", pa.string()),
        pa.field("arrival", pa.timestamp("us", tz="UTC")),
    ]
)


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the envelope's JSON form (protobuf writes "Z")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def event_time(event: StreamEvent) -> datetime:
    """When the event happened: occurred_at, else when it entered the stream."""
    return _timestamp(event.envelope.get("occurred_at")) or event.arrival.astimezone(UTC)


def partition_prefix(event_type: str, hour: datetime) -> str:
    h = hour.astimezone(UTC)
    return f"{RAW_PREFIX}event_type={quote(event_type, safe='')}/date={h:%Y-%m-%d}/hour={h:%H}/"


def _row(event: StreamEvent) -> dict[str, Any]:
    envelope = event.envelope
    version = envelope.get("aggregate_version")
    return {
        "id": event.id,
        "type": event.type,
        "source": envelope.get("source") or None,
        "subject": envelope.get("subject") or None,
        "occurred_at": _timestamp(envelope.get("occurred_at")),
        # int64 is a string in the proto JSON form.
        "aggregate_version": int(str(version)) if str(version or "").isdigit() else None,
        "data_type": envelope.get("data_type") or None,
        "data": json.dumps(event.data, ensure_ascii=False, sort_keys=True),
        "traceparent": envelope.get("traceparent") or None,
        "shard_id": event.shard_id,
        "sequence_number": event.sequence_number,
        "arrival": event.arrival.astimezone(UTC),
    }


def to_parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    return sink.getvalue()


def from_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data), schema=RAW_SCHEMA)


@dataclass(frozen=True)
class _Group:
    event_type: str
    hour: datetime
    shard_id: str


class LakeSink:
    """A records.Sink writing each batch as Parquet files, one per (type, hour, shard)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    async def write(self, events: Sequence[StreamEvent]) -> None:
        groups: dict[_Group, list[StreamEvent]] = {}
        for event in events:
            hour = event_time(event).replace(minute=0, second=0, microsecond=0)
            groups.setdefault(_Group(event.type, hour, event.shard_id), []).append(event)
        for group, members in groups.items():
            # Sequence numbers are decimal strings (up to 128 bits): by length, then text.
            ordered = sorted(members, key=lambda e: (len(e.sequence_number), e.sequence_number))
            name = f"{group.shard_id}-{ordered[0].sequence_number}-{ordered[-1].sequence_number}"
            table = pa.Table.from_pylist([_row(e) for e in ordered], schema=RAW_SCHEMA)
            await self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{partition_prefix(group.event_type, group.hour)}{name}.parquet",
                Body=to_parquet(table),
            )


async def _list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


async def _event_types(s3: Any, bucket: str) -> list[str]:
    """The event types the lake has partitions of (decoded)."""
    types: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=RAW_PREFIX, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            segment = common["Prefix"][len(RAW_PREFIX) :].rstrip("/")
            if segment.startswith("event_type="):
                types.append(unquote(segment[len("event_type=") :]))
    return types


def deduplicated(tables: Iterable[pa.Table]) -> pa.Table:
    """One row per event id (the first one in the tables' order), ordered by occurred_at
    then id."""
    merged = pa.concat_tables(list(tables))
    if merged.num_rows == 0:
        return merged
    rows = merged.append_column("row", pa.array(range(merged.num_rows), type=pa.int64()))
    firsts = rows.group_by("id", use_threads=False).aggregate([("row", "min")])
    unique = merged.take(firsts.column("row_min"))
    by_time = pc.sort_indices(unique, sort_keys=[("occurred_at", "ascending"), ("id", "ascending")])
    return unique.take(by_time)


@dataclass(frozen=True)
class Compaction:
    partitions: int
    files_merged: int
    rows: int
    duplicates_dropped: int


async def compact_hour(s3: Any, bucket: str, hour: datetime) -> Compaction:
    """Merges each partition of `hour` into one file, `compacted.parquet`, one row per
    event id, then deletes the small files it merged. Safe to re-run and to run while the
    sink writes: it deletes only files it read, the compacted file is read back in (a
    crash between the write and the deletes leaves duplicates the next run drops), and a
    file written meanwhile waits for the next run."""
    partitions = files = rows = dropped = 0
    for event_type in await _event_types(s3, bucket):
        prefix = partition_prefix(event_type, hour)
        keys = await _list_keys(s3, bucket, prefix)
        small = [k for k in keys if not k.endswith(f"/{COMPACTED_NAME}")]
        if not small:
            continue
        tables = []
        for key in keys:
            body = await s3.get_object(Bucket=bucket, Key=key)
            tables.append(from_parquet(await body["Body"].read()))
        before = sum(t.num_rows for t in tables)
        merged = deduplicated(tables)
        await s3.put_object(Bucket=bucket, Key=f"{prefix}{COMPACTED_NAME}", Body=to_parquet(merged))
        # DeleteObjects takes at most 1,000 keys.
        for start in range(0, len(small), 1000):
            await s3.delete_objects(
                Bucket=bucket,
                Delete={
                    "Objects": [{"Key": k} for k in small[start : start + 1000]],
                    "Quiet": True,
                },
            )
        partitions += 1
        files += len(small)
        rows += merged.num_rows
        dropped += before - merged.num_rows
        log.info("compacted %s: %d files, %d rows", prefix, len(small), merged.num_rows)
    return Compaction(partitions, files, rows, dropped)


def hours_back(last: datetime, count: int) -> list[datetime]:
    """`last` and the count - 1 hours before it, oldest first."""
    return [last - timedelta(hours=n) for n in reversed(range(count))]
