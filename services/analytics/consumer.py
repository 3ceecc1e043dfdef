"""The analytics consumer worker: every shard of the analytics stream into the warehouse
and the other sinks, exactly once in effect.

`python -m services.analytics.consumer` runs it as its own process, with the runtime's
life cycle: JSON logs, gRPC health (SERVING while PostgreSQL, the stream and the lease table
answer), and on SIGTERM the batches in flight are abandoned (their transactions roll back)
and the held leases released, so other replicas take the shards at once.

A batch (one GetRecords of one shard) is handled as:
1. decode each record (records.decode); a malformed one becomes a dead letter;
2. every other sink (`Sink.write`, idempotent per event id) gets the decoded events;
3. one PostgreSQL transaction writes the warehouse rows (de-duplicated by event id), the
   dead letters (also those the warehouse refused as invalid data), and moves the shard's
   checkpoint to the batch's last sequence number only if it still holds the value the
   batch started from. If it does not (another replica moved it: this one lost its lease),
   the transaction rolls back and the shard is dropped.
A crash anywhere before the commit leaves the checkpoint where it was: the batch is read
again, the sinks written again (idempotent), the warehouse rows written once.

Reading resumes after the checkpoint (AFTER_SEQUENCE_NUMBER), a new shard starts at
TRIM_HORIZON; a closed shard read to its end is marked finished, and its children are read
only then (leases.eligible_shards). Leases: services/analytics/leases.py.

Environment (besides the analytics service's own, CLOUDSHELF_ANALYTICS_POSTGRES_DSN etc.):
- CLOUDSHELF_ANALYTICS_LEASE_TABLE (cloudshelf-analytics-leases): the DynamoDB lease table,
  created when missing (as the KCL does; provisioning creates it too);
- CLOUDSHELF_ANALYTICS_LEASE_SECONDS (10): a silent replica's shards are taken over after
  this, plus at most a third of it;
- CLOUDSHELF_ANALYTICS_BATCH_RECORDS (5000): GetRecords' Limit;
- CLOUDSHELF_ANALYTICS_IDLE_POLL_SECONDS (0.5): the pause after a read that found nothing;
- CLOUDSHELF_ANALYTICS_WORKER_ID (<host>-<pid>): this replica's name in the lease table;
- CLOUDSHELF_LISTEN_ADDR: the health port (default 127.0.0.1:50063 beside the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from cloudshelf.runtime.config import Settings, env_float, env_int, env_text
from cloudshelf.runtime.health import Dependency
from cloudshelf.runtime.logs import configure_logging
from cloudshelf.runtime.server import ServiceApp, serve
from cloudshelf.runtime.stores import aws_session, open_aws_client, open_postgres
from cloudshelf.runtime.telemetry import configure_telemetry, shutdown_telemetry
from services.analytics.leases import (
    ExpiryClock,
    Lease,
    LeaseTable,
    eligible_shards,
    plan_leases,
)
from services.analytics.records import MalformedRecord, Sink, StreamEvent, decode
from services.analytics.sinks import open_sinks
from services.analytics.warehouse import WarehouseSink

log = logging.getLogger("cloudshelf.analytics.consumer")
tracer = trace.get_tracer("cloudshelf.analytics.consumer")

WORKER_NAME = "analytics-consumer"
DEFAULT_LISTEN_ADDR = "127.0.0.1:50063"
# Seconds to wait before reading a shard again after a failure (store down, throttled).
RETRY_SECONDS = 1.0
# Kinesis allows 5 GetRecords per second per shard: reads of one shard start this far apart.
READ_INTERVAL_SECONDS = 0.2
# Failures of a store (down, throttled, timed out): retried after a pause.
_TRANSIENT = (
    ClientError,
    BotoCoreError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


LEASE_TABLE_ENV = "CLOUDSHELF_ANALYTICS_LEASE_TABLE"
DEFAULT_LEASE_TABLE = "cloudshelf-analytics-leases"


def lease_table_name(environ: Mapping[str, str] | None = None) -> str:
    return env_text(LEASE_TABLE_ENV, DEFAULT_LEASE_TABLE, environ)


@dataclass(frozen=True)
class ConsumerSettings:
    stream: str
    lease_table: str = DEFAULT_LEASE_TABLE
    lease_seconds: float = 10.0
    batch_records: int = 5000
    idle_poll_seconds: float = 0.5
    worker_id: str = ""

    @classmethod
    def from_env(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> ConsumerSettings:
        worker_id = env_text(
            "CLOUDSHELF_ANALYTICS_WORKER_ID",
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}",
            environ,
        )
        return cls(
            stream=settings.analytics_stream,
            lease_table=lease_table_name(environ),
            lease_seconds=env_float(
                "CLOUDSHELF_ANALYTICS_LEASE_SECONDS", cls.lease_seconds, environ
            ),
            batch_records=min(
                10_000,
                env_int("CLOUDSHELF_ANALYTICS_BATCH_RECORDS", cls.batch_records, environ),
            ),
            idle_poll_seconds=env_float(
                "CLOUDSHELF_ANALYTICS_IDLE_POLL_SECONDS", cls.idle_poll_seconds, environ
            ),
            worker_id=worker_id,
        )


class CheckpointMoved(Exception):
    """The shard's checkpoint is not where this batch started: another replica owns it."""


@dataclass(frozen=True)
class Checkpoint:
    sequence_number: str | None
    finished: bool


@dataclass(frozen=True)
class DeadLetter:
    shard_id: str
    sequence_number: str
    data: bytes
    reason: str
    arrival: datetime
    event_id: str | None = None
    event_type: str | None = None


class Checkpoints:
    """Per-shard checkpoints in the warehouse database, of one incarnation of the stream.

    Keyed by the stream's name and creation time (`<name>@<epoch seconds>`): a stream
    deleted and created again (or an emulator restarted) numbers its records anew, and a
    checkpoint of the old one would make the consumer skip that many new records. Until
    `bind` names the incarnation, the name alone is used."""

    def __init__(self, pool: asyncpg.Pool, stream: str) -> None:
        self.pool = pool
        self.stream = stream

    def bind(self, name: str, created: datetime) -> None:
        self.stream = f"{name}@{int(created.timestamp())}"

    async def all(self) -> dict[str, Checkpoint]:
        rows = await self.pool.fetch(
            "SELECT shard_id, sequence_number, finished FROM analytics.consumer_checkpoints "
            "WHERE stream_name = $1",
            self.stream,
        )
        return {r["shard_id"]: Checkpoint(r["sequence_number"], r["finished"]) for r in rows}

    async def move(
        self,
        conn: asyncpg.Connection,
        shard_id: str,
        start: str | None,
        to: str | None,
        finished: bool,
        owner: str,
    ) -> None:
        """Moves the checkpoint from `start` (None: the shard was never checkpointed) to
        `to`; CheckpointMoved when it is not at `start` any more."""
        if start is None:
            status = await conn.execute(
                "INSERT INTO analytics.consumer_checkpoints (stream_name, shard_id, "
                "sequence_number, finished, owner) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT DO NOTHING",
                self.stream,
                shard_id,
                to,
                finished,
                owner,
            )
        else:
            status = await conn.execute(
                "UPDATE analytics.consumer_checkpoints SET sequence_number = $3, "
                "finished = $4, owner = $5, updated_at = now() "
                "WHERE stream_name = $1 AND shard_id = $2 AND sequence_number = $6 "
                "AND NOT finished",
                self.stream,
                shard_id,
                to,
                finished,
                owner,
                start,
            )
        if not status.endswith(" 1"):
            raise CheckpointMoved(f"{shard_id}: checkpoint is no longer {start}")


async def write_dead_letters(
    conn: asyncpg.Connection, stream: str, letters: Sequence[DeadLetter]
) -> None:
    if not letters:
        return
    await conn.execute(
        "INSERT INTO analytics.dead_letters (stream_name, shard_id, sequence_number, data, "
        "reason, event_id, event_type, arrival_time) "
        "SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], "
        "$6::text[], $7::text[], $8::timestamptz[]) "
        "ON CONFLICT (stream_name, shard_id, sequence_number) DO NOTHING",
        stream,
        [d.shard_id for d in letters],
        [d.sequence_number for d in letters],
        [d.data for d in letters],
        # PostgreSQL text holds no NUL: a reason quoting the record must not either.
        [d.reason.replace("\x00", "\\0")[:2000] for d in letters],
        [d.event_id for d in letters],
        [d.event_type for d in letters],
        [d.arrival for d in letters],
    )


def _arrival(record: Mapping[str, Any]) -> datetime:
    arrival = record.get("ApproximateArrivalTimestamp")
    if isinstance(arrival, datetime):
        return arrival if arrival.tzinfo else arrival.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


class Consumer:
    """Holds leases and runs one reading task per held shard."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        kinesis: Any,
        leases: LeaseTable,
        settings: ConsumerSettings,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.pool = pool
        self.kinesis = kinesis
        self.leases = leases
        self.settings = settings
        self.sinks = list(sinks)
        self.warehouse = WarehouseSink()
        self.checkpoints = Checkpoints(pool, settings.stream)
        self.clock = ExpiryClock(settings.lease_seconds)
        self.held: dict[str, Lease] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Shard id -> its EndingSequenceNumber once the shard is closed (resharded).
        self.ending: dict[str, str] = {}
        self.lease_table_ready = False
        self.me = settings.worker_id

    # --- leases ------------------------------------------------------------------------

    async def run(self) -> None:
        """The background job: lease rounds until cancelled, then the leases released."""
        log.info(
            "consumer %s reading %s (leases in %s)",
            self.me,
            self.settings.stream,
            self.leases.table,
        )
        try:
            while True:
                try:
                    with suppress_instrumentation():
                        await self.lease_round()
                except _TRANSIENT as exc:
                    log.warning("lease round failed: %s: %s", _error_code(exc), exc)
                except Exception:  # never let the job die while the process looks healthy
                    log.exception("lease round failed")
                await asyncio.sleep(self.settings.lease_seconds / 3)
        finally:
            await self.stop()

    async def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        params: dict[str, Any] = {"StreamName": self.settings.stream}
        while True:
            page = await self.kinesis.list_shards(**params)
            shards.extend(page["Shards"])
            token = page.get("NextToken")
            if not token:
                return shards
            params = {"NextToken": token}

    async def lease_round(self) -> None:
        if not self.lease_table_ready:
            # Here rather than at start: a store down at start delays the work (health
            # says so) instead of failing the process.
            await self.leases.ensure()
            summary = await self.kinesis.describe_stream_summary(StreamName=self.settings.stream)
            created = summary["StreamDescriptionSummary"]["StreamCreationTimestamp"]
            self.checkpoints.bind(self.settings.stream, created)
            self.lease_table_ready = True
        # Renew first: a slow round must not let this worker's own leases expire.
        for shard_id, lease in list(self.held.items()):
            renewed = await self.leases.renew(lease)
            if renewed is None:
                log.info("lease of %s lost to another worker", shard_id)
                await self._drop(shard_id)
            else:
                self.held[shard_id] = renewed
        for shard_id, task in list(self.tasks.items()):
            if task.done():  # read its shard to the end (or crashed): free the lease
                del self.tasks[shard_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("reading %s crashed", shard_id, exc_info=task.exception())
                if shard_id in self.held:
                    await self.leases.release(self.held.pop(shard_id))
        shards = await self._list_shards()
        for shard in shards:
            ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
            if ending is not None:
                self.ending[shard["ShardId"]] = ending
        leases = await self.leases.scan()
        known = {lease.shard_id for lease in leases}
        for shard in shards:
            if shard["ShardId"] not in known:
                await self.leases.create(shard["ShardId"])
        if len(known) < len(shards):
            leases = await self.leases.scan()
        finished = {s for s, c in (await self.checkpoints.all()).items() if c.finished}
        expired = self.clock.observe(leases, time.monotonic())
        eligible = eligible_shards(shards, finished)
        # Leases in this worker's name that it does not hold (restarted with a fixed
        # CLOUDSHELF_ANALYTICS_WORKER_ID): taken back now, not left to expire.
        orphans = [
            lease
            for lease in leases
            if lease.owner == self.me
            and lease.shard_id not in self.held
            and lease.shard_id in eligible
        ]
        plan = plan_leases(leases, eligible, self.me, expired)
        for lease in [*orphans, *plan.take, *([plan.steal] if plan.steal else [])]:
            taken = await self.leases.take(lease, self.me)
            if taken is None:
                continue
            verb = "stole" if lease is plan.steal else "took"
            log.info(
                "%s lease of %s (from %s)",
                verb,
                lease.shard_id,
                lease.owner or "nobody",
                extra={"shard_id": lease.shard_id, "share": plan.share},
            )
            self.held[lease.shard_id] = taken
            self.tasks[lease.shard_id] = asyncio.create_task(
                self.consume_shard(lease.shard_id), name=f"shard-{lease.shard_id}"
            )

    async def _drop(self, shard_id: str) -> None:
        if shard_id in self.held:
            del self.held[shard_id]
        task = self.tasks.pop(shard_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Abandons the batches in flight and frees the leases held."""
        for shard_id in list(self.tasks):
            task = self.tasks.pop(shard_id)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for shard_id, lease in list(self.held.items()):
            try:
                await self.leases.release(lease)
            except (ClientError, BotoCoreError, OSError) as exc:
                log.warning("could not release %s: %s", shard_id, exc)
        self.held.clear()
        log.info("consumer %s stopped; leases released", self.me)

    # --- reading a shard ---------------------------------------------------------------

    async def _iterator(self, shard_id: str, checkpoint: Checkpoint | None) -> str:
        params: dict[str, Any] = {"StreamName": self.settings.stream, "ShardId": shard_id}
        if checkpoint is None or checkpoint.sequence_number is None:
            params["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            params["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            params["StartingSequenceNumber"] = checkpoint.sequence_number
        response = await self.kinesis.get_shard_iterator(**params)
        return str(response["ShardIterator"])

    async def consume_shard(self, shard_id: str) -> None:
        """Reads one shard from its checkpoint while the lease is held."""
        while True:
            try:
                await self._read_shard(shard_id)
                return  # read to its end
            except CheckpointMoved as exc:
                # Another replica wrote it (it held the lease a moment ago, or does now):
                # start again from where it stands; the lease round stops this task if
                # the lease is gone.
                log.warning("checkpoint of %s moved by another worker: %s", shard_id, exc)
                await asyncio.sleep(RETRY_SECONDS)
            except _TRANSIENT as exc:
                log.warning("reading %s failed, retrying: %s: %s", shard_id, _error_code(exc), exc)
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:
                # A sink's own failure, or a bug: the batch is read again (the checkpoint
                # did not move) after a pause, and the lease is kept meanwhile.
                log.exception("reading %s failed, retrying", shard_id)
                await asyncio.sleep(RETRY_SECONDS)

    async def _get_records(
        self, shard_id: str, iterator: str, after: str | None, not_before: float = 0.0
    ) -> Any:
        """One GetRecords, not before the monotonic time `not_before`; an expired iterator
        is replaced by one after `after`."""
        await asyncio.sleep(max(0.0, not_before - time.monotonic()))
        with suppress_instrumentation():  # idle polls are not traces
            try:
                return await self.kinesis.get_records(
                    ShardIterator=iterator, Limit=self.settings.batch_records
                )
            except ClientError as exc:
                if _error_code(exc) != "ExpiredIteratorException":
                    raise
            fresh = await self._iterator(shard_id, Checkpoint(after, False))
            return await self.kinesis.get_records(
                ShardIterator=fresh, Limit=self.settings.batch_records
            )

    async def _read_shard(self, shard_id: str) -> None:
        checkpoint = (await self.checkpoints.all()).get(shard_id)
        if checkpoint is not None and checkpoint.finished:
            return
        start = checkpoint.sequence_number if checkpoint else None
        iterator = await self._iterator(shard_id, checkpoint)
        reading = asyncio.create_task(self._get_records(shard_id, iterator, start))
        read_started = time.monotonic()
        try:
            while True:
                waited = time.monotonic()
                response = await reading
                waited = time.monotonic() - waited
                records = response["Records"]
                next_iterator = response.get("NextShardIterator")
                if not records and self._read_to_end(shard_id, start):
                    next_iterator = None
                end = records[-1]["SequenceNumber"] if records else start
                if next_iterator is not None:
                    if not records:
                        await asyncio.sleep(self.settings.idle_poll_seconds)
                    # The next batch is read while this one is written.
                    not_before = read_started + READ_INTERVAL_SECONDS
                    reading = asyncio.create_task(
                        self._get_records(shard_id, next_iterator, end, not_before)
                    )
                    read_started = max(time.monotonic(), not_before)
                if records or next_iterator is None:
                    write_started = time.monotonic()
                    await self.write_batch(shard_id, start, end, records, next_iterator is None)
                    start = end
                    log.debug(
                        "batch of %d from %s: waited %.3fs for it, wrote it in %.3fs",
                        len(records),
                        shard_id,
                        waited,
                        time.monotonic() - write_started,
                    )
                if next_iterator is None:
                    log.info("shard %s read to its end", shard_id)
                    return
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading

    def _read_to_end(self, shard_id: str, checkpoint: str | None) -> bool:
        """A closed shard whose last record is written. Kinesis says so by returning no
        NextShardIterator; the emulator never does, so its ending sequence number (known
        from ListShards) is checked too."""
        ending = self.ending.get(shard_id)
        if ending is None:
            return False
        if checkpoint is None:  # never read: done only if it never held a record
            return int(ending) == 0
        return int(checkpoint) >= int(ending)

    async def write_batch(
        self,
        shard_id: str,
        start: str | None,
        end: str | None,
        records: Sequence[Mapping[str, Any]],
        finished: bool,
    ) -> None:
        events: list[StreamEvent] = []
        letters: list[DeadLetter] = []
        for record in records:
            data = bytes(record["Data"])
            arrival = _arrival(record)
            try:
                events.append(decode(data, shard_id, record["SequenceNumber"], arrival))
            except MalformedRecord as exc:
                letters.append(
                    DeadLetter(shard_id, record["SequenceNumber"], data, str(exc), arrival)
                )
        with tracer.start_as_current_span(
            "analytics.consume",
            attributes={
                "messaging.system": "aws_kinesis",
                "messaging.destination.name": self.settings.stream,
                "messaging.batch.message_count": len(records),
                "cloudshelf.shard_id": shard_id,
            },
        ):
            for sink in self.sinks:
                await sink.write(events)
            async with self.pool.acquire() as conn, conn.transaction():
                rejected = await self.warehouse.write(conn, events)
                raw = {r["SequenceNumber"]: r["Data"] for r in records} if rejected else {}
                letters.extend(
                    DeadLetter(
                        shard_id,
                        r.event.sequence_number,
                        bytes(raw.get(r.event.sequence_number, b"")),
                        r.reason,
                        r.event.arrival,
                        r.event.id,
                        r.event.type,
                    )
                    for r in rejected
                )
                await write_dead_letters(conn, self.settings.stream, letters)
                await self.checkpoints.move(conn, shard_id, start, end, finished, self.me)
        if letters:
            log.warning(
                "%d dead letters from %s",
                len(letters),
                shard_id,
                extra={"shard_id": shard_id, "reasons": sorted({d.reason for d in letters})},
            )


# --- the process -----------------------------------------------------------------------------


def settings_from_env() -> Settings:
    """The analytics service's settings (database, stream), with this worker's name and
    health port."""
    settings = Settings.from_env("analytics")
    listen = env_text("CLOUDSHELF_LISTEN_ADDR", DEFAULT_LISTEN_ADDR)
    return dataclasses.replace(settings, service=WORKER_NAME, listen_addr=listen)


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    consumer_settings = ConsumerSettings.from_env(settings)
    pool, postgres = await open_postgres(settings, stack)
    session = aws_session(settings)
    kinesis = await open_aws_client(session, stack, "kinesis", settings)
    dynamodb = await open_aws_client(session, stack, "dynamodb", settings)
    leases = LeaseTable(dynamodb, consumer_settings.lease_table)
    # The sinks besides the warehouse (Timestream, the S3 lake): each a records.Sink,
    # written per batch before the checkpoint commits.
    sinks = await open_sinks(settings, pool, stack)
    consumer = Consumer(pool, kinesis, leases, consumer_settings, sinks)

    async def stream_active() -> None:
        summary = await kinesis.describe_stream_summary(StreamName=consumer_settings.stream)
        status = summary["StreamDescriptionSummary"]["StreamStatus"]
        if status not in ("ACTIVE", "UPDATING"):
            raise RuntimeError(f"stream {consumer_settings.stream} is {status}")

    async def consume() -> None:
        await consumer.run()

    return ServiceApp(
        servicers=[],
        dependencies=[
            postgres,
            Dependency("kinesis", stream_active),
            Dependency("dynamodb", leases.reachable),
        ],
        background=[consume],
    )


def main() -> None:
    configure_logging(WORKER_NAME)
    configure_telemetry(WORKER_NAME)
    try:
        asyncio.run(serve(settings_from_env(), setup))
    finally:
        shutdown_telemetry()


if __name__ == "__main__":
    main()
