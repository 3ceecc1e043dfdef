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

Compaction streams: however large a partition-hour is, it holds about
COMPACTION_ROWS_IN_MEMORY rows at a time. The partition's files are downloaded to a local
work directory (TMPDIR), their rows spread by a hash of the id over enough bucket files
that each bucket fits in memory; each bucket is de-duplicated and sorted by time on its
own, and the sorted buckets are merged batch by batch into the compacted file, which is
uploaded in parts. The work directory needs about twice the partition's compressed size.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from services.analytics.records import StreamEvent

log = logging.getLogger(__name__)

RAW_PREFIX = "raw/"
COMPACTED_NAME = "compacted.parquet"
# Rows per Parquet row group: readers skip by row group statistics (occurred_at, id).
ROW_GROUP_SIZE = 100_000
# The most rows compaction holds at once (about 0.5 KB each in Arrow): beyond, it spills
# to local files.
COMPACTION_ROWS_IN_MEMORY = 200_000
# Rows read from an input file at a time.
READ_BATCH_ROWS = 10_000
# A row's place in the compaction's input (the first of an id's rows wins) and its time
# as a sortable integer (no time: last, as pc.sort_indices places nulls).
_ORDINAL = "_ordinal"
_TIME = "_time"
_NO_TIME = 2**63 - 1

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


@dataclass(frozen=True)
class Compaction:
    partitions: int
    files_merged: int
    rows: int
    duplicates_dropped: int


@dataclass(frozen=True)
class Merged:
    """What merge_files did: rows read, rows written, and the buckets it spread them over
    (1: the partition fitted in memory)."""

    rows_in: int
    rows_out: int
    buckets: int


def _bucket_of(ids: pa.ChunkedArray | pa.Array, buckets: int) -> pa.Array:
    """Each id's bucket: a stable hash (CRC-32 of its UTF-8), so one id's rows meet."""
    return pa.array([zlib.crc32(i.encode()) % buckets for i in ids.to_pylist()], type=pa.int32())


def _sort_key(table: pa.Table) -> pa.Table:
    """`table` with _TIME: occurred_at in microseconds, _NO_TIME when there is none."""
    micros = pc.cast(table.column("occurred_at"), pa.int64())
    return table.append_column(_TIME, pc.fill_null(micros, _NO_TIME))


_BY_TIME = [(_TIME, "ascending"), ("id", "ascending")]


def _spread(inputs: Sequence[Path], work: Path, buckets: int, batch_rows: int) -> list[Path]:
    """Pass 1: every input row, numbered in input order, into the file of its id's bucket
    (Arrow IPC streams, zstd), reading `batch_rows` rows at a time."""
    paths = [work / f"bucket-{n}.arrow" for n in range(buckets)]
    schema = RAW_SCHEMA.append(pa.field(_ORDINAL, pa.int64()))
    options = ipc.IpcWriteOptions(compression="zstd")
    writers = [ipc.new_stream(str(p), schema, options=options) for p in paths]
    try:
        ordinal = 0
        for path in inputs:
            for batch in pq.ParquetFile(path).iter_batches(
                batch_size=batch_rows, columns=RAW_SCHEMA.names
            ):
                rows = pa.Table.from_batches([batch]).cast(RAW_SCHEMA)
                count = rows.num_rows
                rows = rows.append_column(
                    _ORDINAL, pa.array(range(ordinal, ordinal + count), type=pa.int64())
                )
                ordinal += count
                if buckets == 1:
                    writers[0].write_table(rows)
                    continue
                where = _bucket_of(rows.column("id"), buckets)
                for n, writer in enumerate(writers):
                    part = rows.filter(pc.equal(where, n))
                    if part.num_rows:
                        writer.write_table(part)
    finally:
        for writer in writers:
            writer.close()
    return paths


def _sort_bucket(path: Path, out: Path, batch_rows: int) -> None:
    """Pass 2: one bucket de-duplicated (an id's first row in input order) and sorted by
    time then id, written back in batches of `batch_rows` for the merge."""
    with ipc.open_stream(str(path)) as reader:
        rows = reader.read_all()
    path.unlink()
    if rows.num_rows:
        firsts = rows.group_by("id", use_threads=False).aggregate([(_ORDINAL, "min")])
        rows = rows.filter(pc.is_in(rows.column(_ORDINAL), value_set=firsts.column(1)))
        rows = _sort_key(rows.drop_columns([_ORDINAL]))
        rows = rows.take(pc.sort_indices(rows, sort_keys=_BY_TIME))
    else:
        rows = _sort_key(rows.drop_columns([_ORDINAL]))
    with ipc.new_stream(str(out), rows.schema) as writer:
        for batch in rows.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)


def _batches(path: Path) -> Iterator[pa.Table]:
    with ipc.open_stream(str(path)) as reader:
        for batch in reader:
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


def _merge_sorted(sorted_buckets: Sequence[Path], writer: pq.ParquetWriter, group: int) -> int:
    """Pass 3: the sorted buckets merged into `writer` by time then id, holding a batch of
    each bucket at a time. Rows up to the smallest last key of the buffers still being
    read are final: they are emitted, sorted, in row groups of `group` rows."""
    sources = [_batches(p) for p in sorted_buckets]
    buffers: list[pa.Table | None] = [None] * len(sources)
    done = [False] * len(sources)
    pending: list[pa.Table] = []
    pending_rows = written = 0

    def flush(final: bool) -> None:
        """Writes the pending rows in whole row groups (the rest too when `final`)."""
        nonlocal pending, pending_rows, written
        count = pending_rows if final else pending_rows - pending_rows % group
        if not count:
            return
        table = pa.concat_tables(pending)
        writer.write_table(table.slice(0, count).drop_columns([_TIME]), row_group_size=group)
        written += count
        pending = [table.slice(count)]
        pending_rows -= count

    while True:
        for n, source in enumerate(sources):
            held = buffers[n]
            if not done[n] and (held is None or held.num_rows == 0):
                buffers[n] = next(source, None)
                done[n] = buffers[n] is None
        live = [b for b in buffers if b is not None and b.num_rows]
        if not live:
            break
        ends = [
            (b.column(_TIME)[-1].as_py(), b.column("id")[-1].as_py())
            for n, b in enumerate(buffers)
            if b is not None and b.num_rows and not done[n]
        ]
        # Nothing still to read sorts before the frontier (every source is sorted).
        frontier = min(ends) if ends else None
        chunks = []
        for n, buffer in enumerate(buffers):
            if buffer is None or not buffer.num_rows:
                continue
            if frontier is not None:
                time, last_id = frontier
                times, ids = buffer.column(_TIME), buffer.column("id")
                final = pc.or_(
                    pc.less(times, time),
                    pc.and_(pc.equal(times, time), pc.less_equal(ids, last_id)),
                )
                # The buffer is sorted: its final rows are a prefix.
                count = pc.sum(final).as_py() or 0
            else:
                count = buffer.num_rows
            chunks.append(buffer.slice(0, count))
            buffers[n] = buffer.slice(count)
        emitted = pa.concat_tables(chunks)
        pending.append(emitted.take(pc.sort_indices(emitted, sort_keys=_BY_TIME)))
        pending_rows += emitted.num_rows
        flush(final=False)
    flush(final=True)
    return written


def merge_files(
    inputs: Sequence[Path],
    output: Path,
    work: Path,
    rows_in_memory: int = COMPACTION_ROWS_IN_MEMORY,
) -> Merged:
    """One partition's Parquet files (RAW_SCHEMA) merged into `output`: one row per event
    id (the first in `inputs`' order), ordered by occurred_at then id, in row groups of up
    to ROW_GROUP_SIZE rows, holding about `rows_in_memory` rows at a time (the rest waits
    in files under `work`)."""
    rows_in = sum(pq.ParquetFile(p).metadata.num_rows for p in inputs)
    buckets = max(1, math.ceil(rows_in / rows_in_memory))
    # In the merge, a batch of every bucket at once; then a row group waiting to be written.
    batch_rows = max(1, rows_in_memory // (2 * buckets))
    group = max(1, min(ROW_GROUP_SIZE, rows_in_memory // 2))
    sorted_buckets = []
    spread = _spread(inputs, work, buckets, min(READ_BATCH_ROWS, rows_in_memory))
    for n, path in enumerate(spread):
        out = work / f"sorted-{n}.arrow"
        _sort_bucket(path, out, batch_rows)
        sorted_buckets.append(out)
    with pq.ParquetWriter(output, RAW_SCHEMA, compression="zstd") as writer:
        rows_out = _merge_sorted(sorted_buckets, writer, group)
    for path in sorted_buckets:
        path.unlink()
    return Merged(rows_in, rows_out, buckets)


async def _download(s3: Any, bucket: str, key: str, path: Path) -> None:
    """The object into `path`, a chunk at a time."""
    answer = await s3.get_object(Bucket=bucket, Key=key)
    with path.open("wb") as file:
        async for chunk in answer["Body"].iter_chunks(1 << 20):
            file.write(chunk)


async def compact_hour(
    s3: Any, bucket: str, hour: datetime, rows_in_memory: int = COMPACTION_ROWS_IN_MEMORY
) -> Compaction:
    """Merges each partition of `hour` into one file, `compacted.parquet`, one row per
    event id, then deletes the small files it merged. Safe to re-run and to run while the
    sink writes: it deletes only files it read, the compacted file is read back in first
    (its rows win; a crash between the write and the deletes leaves duplicates the next
    run drops), and a file written meanwhile waits for the next run. Memory: see
    merge_files."""
    partitions = files = rows = dropped = 0
    for event_type in await _event_types(s3, bucket):
        prefix = partition_prefix(event_type, hour)
        keys = await _list_keys(s3, bucket, prefix)
        small = [k for k in keys if not k.endswith(f"/{COMPACTED_NAME}")]
        if not small:
            continue
        compacted = sorted(set(keys) - set(small))
        with tempfile.TemporaryDirectory(prefix="cloudshelf-compact-") as directory:
            work = Path(directory)
            inputs = []
            for n, key in enumerate(compacted + small):  # the compacted rows win
                path = work / f"input-{n}.parquet"
                await _download(s3, bucket, key, path)
                inputs.append(path)
            output = work / COMPACTED_NAME
            merged = await asyncio.to_thread(merge_files, inputs, output, work, rows_in_memory)
            # In parts above 8 MB (S3's managed transfer), read from the file as it goes.
            await s3.upload_file(str(output), bucket, f"{prefix}{COMPACTED_NAME}")
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
        rows += merged.rows_out
        dropped += merged.rows_in - merged.rows_out
        log.info(
            "compacted %s: %d files, %d rows (%d buckets)",
            prefix,
            len(small),
            merged.rows_out,
            merged.buckets,
        )
    return Compaction(partitions, files, rows, dropped)


def hours_back(last: datetime, count: int) -> list[datetime]:
    """`last` and the count - 1 hours before it, oldest first."""
    return [last - timedelta(hours=n) for n in reversed(range(count))]
