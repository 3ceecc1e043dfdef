"""Integration events: the transactional outbox and its relay to EventBridge.

A service writes its events into its own outbox table in the same transaction as the data
change (`write_outbox`), so a committed change always has its events and a rolled-back one
has none. Each event's data is a proto message, stored as its JSON form; the envelope
(`cloudshelf.common.v1.EventEnvelope`) carries it as a JSON object, with the aggregate id
(`subject`), the aggregate's database version, a unique id for consumers to de-duplicate
(delivery is at-least-once) and the producer's W3C trace context.

`OutboxRelay` moves rows to the bus without ever wedging:
- a round *claims* due rows (a lease in `claimed_until`, one short statement with
  FOR UPDATE SKIP LOCKED, so replicas share the work), publishes them outside any
  transaction, then marks each row: published, retried later, or dead-lettered;
- each failed row is retried on its own exponential schedule (`next_attempt_at`), so rows
  that keep failing never hold back healthy ones;
- a row whose entry the bus refuses as invalid (ValidationException, MalformedDetail,
  InvalidArgument, too large), or that failed `max_attempts` times, moves to the
  dead-letter table with its reason (`cloudshelf outbox dead-letters` / `replay ID`);
- when the bus itself fails (unreachable, throttling) the loop backs off as a whole and
  does not wake on new writes until a call succeeds again; such failures never
  dead-letter a row (the event is not at fault);
- published rows are deleted by the relay after `retention`;
- the age of the oldest unpublished row is measured periodically, exported as the
  OpenTelemetry gauge `cloudshelf.outbox.oldest_unpublished_age` and logged as a warning
  while above `backlog_alert_age`.

Polls run with instrumentation suppressed (no root span per idle poll); a round that sends
something is one span, linked to the traces that produced its events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.config import env_float

log = logging.getLogger("cloudshelf.events")

# EventBridge PutEvents: at most 10 entries, whose sizes total less than 256 KB.
PUT_EVENTS_MAX_ENTRIES = 10
PUT_EVENTS_MAX_BYTES = 256 * 1024

# Codes that say "this entry (or request) is invalid": sending it again cannot succeed.
# Throttling, InternalFailure and authorization errors are retried (an operator can fix
# a policy; a malformed event stays malformed).
NON_RETRYABLE_CODES = frozenset(
    {
        "ValidationException",
        "InvalidArgument",
        "MalformedDetail",
        "InvalidAccountIdException",
        "RedactionFailure",
        "EntryTooLarge",  # ours: an entry of 256 KB or more can never be sent
    }
)

_EVENT_COLUMNS = (
    "id, event_type, aggregate_id, aggregate_version, data_type, payload, traceparent, "
    "tracestate, created_at"
)
_TRACE_CONTEXT = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class OutboxTables:
    """A service's outbox and dead-letter tables (schema-qualified), e.g.
    OutboxTables("book_catalog.outbox", "book_catalog.outbox_dead_letters")."""

    outbox: str
    dead_letters: str


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    # The aggregate the event is about, and its version after the change.
    subject: str
    aggregate_version: int
    # The full name of the proto message `data` is the JSON form of.
    data_type: str
    data: Mapping[str, Any]
    traceparent: str | None = None
    tracestate: str | None = None
    # Set by the database when the row is written (its clock at the start of the
    # writing transaction, not a pod's).
    occurred_at: datetime | None = None
    # Failed deliveries so far.
    attempts: int = 0

    def envelope(self, source: str) -> dict[str, Any]:
        """The JSON form of cloudshelf.common.v1.EventEnvelope (proto field names)."""
        envelope = common_pb2.EventEnvelope(
            id=self.id,
            type=self.type,
            source=source,
            subject=self.subject,
            aggregate_version=self.aggregate_version,
            data_type=self.data_type,
            traceparent=self.traceparent or "",
            tracestate=self.tracestate or "",
        )
        if self.occurred_at is not None:
            envelope.occurred_at.FromDatetime(self.occurred_at)
        document = json_format.MessageToDict(envelope, preserving_proto_field_name=True)
        # A Struct's JSON form is the object itself. Written as is rather than through
        # Struct, which holds every number as a double (4 would come out as 4.0).
        document["data"] = dict(self.data)
        return document


def event_data(message: Message) -> dict[str, Any]:
    """The JSON form of an event's data message: proto field names, enums by name, int64
    as strings, and fields at their default values included (so rules can match `false`)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def new_event(event_type: str, subject: str | int, version: int, data: Message) -> Event:
    """An event about aggregate `subject` at `version`, with the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # traceparent and tracestate of the current span, if any
    return Event(
        id=str(uuid.uuid4()),
        type=event_type,
        subject=str(subject),
        aggregate_version=version,
        data_type=data.DESCRIPTOR.full_name,
        data=event_data(data),
        traceparent=carrier.get("traceparent"),
        tracestate=carrier.get("tracestate"),
    )


async def write_outbox(
    conn: asyncpg.Connection, tables: OutboxTables, events: Sequence[Event]
) -> None:
    """Adds events to the outbox; call inside the transaction that makes the change."""
    await conn.executemany(
        f"INSERT INTO {tables.outbox} (id, event_type, aggregate_id, aggregate_version, "
        "data_type, payload, traceparent, tracestate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                uuid.UUID(e.id),
                e.type,
                e.subject,
                e.aggregate_version,
                e.data_type,
                dict(e.data),
                e.traceparent,
                e.tracestate,
            )
            for e in events
        ],
    )


def _event_from_row(row: asyncpg.Record) -> Event:
    return Event(
        id=str(row["id"]),
        type=row["event_type"],
        subject=row["aggregate_id"],
        aggregate_version=row["aggregate_version"],
        data_type=row["data_type"],
        data=row["payload"],
        traceparent=row["traceparent"],
        tracestate=row["tracestate"],
        occurred_at=row["created_at"],
        attempts=row["attempts"],
    )


# --- publishing ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryFailure:
    code: str
    message: str
    retryable: bool
    # The bus failed as a whole (unreachable, throttled): not the event's fault. Such
    # failures back the relay off and never dead-letter a row.
    bus_failed: bool = False

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"[:2000]


class Publisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> list[DeliveryFailure | None]:
        """Sends events; returns, per event in order, None (delivered) or why not."""
        ...


def entry_size(entry: Mapping[str, Any]) -> int:
    """The size EventBridge counts for a PutEvents entry: the UTF-8 bytes of Source,
    DetailType, Detail and each Resource, plus 14 for a Time."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        if entry.get(key) is not None:
            size += len(entry[key].encode())
    return size + sum(len(resource.encode()) for resource in entry.get("Resources") or ())


def put_events_chunks(sizes: Sequence[int]) -> Iterator[list[int]]:
    """Groups entry positions, in order, into requests of at most 10 entries whose sizes
    total under 256 KB. Each size must itself be under 256 KB."""
    chunk: list[int] = []
    total = 0
    for position, size in enumerate(sizes):
        if chunk and (len(chunk) == PUT_EVENTS_MAX_ENTRIES or total + size >= PUT_EVENTS_MAX_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(position)
        total += size
    if chunk:
        yield chunk


class EventBridgePublisher:
    def __init__(self, events_client: Any, bus_name: str, source: str) -> None:
        self.client = events_client
        self.bus_name = bus_name
        self.source = source

    def entry(self, event: Event) -> dict[str, Any]:
        return {
            "Source": self.source,
            "DetailType": event.type,
            # Compact and unescaped: a CJK character is 3 bytes, not a 6-byte \\uXXXX.
            "Detail": json.dumps(
                event.envelope(self.source), ensure_ascii=False, separators=(",", ":")
            ),
            "EventBusName": self.bus_name,
        }

    async def publish(self, events: Sequence[Event]) -> list[DeliveryFailure | None]:
        outcomes: list[DeliveryFailure | None] = [None] * len(events)
        entries = [self.entry(event) for event in events]
        sendable: list[int] = []
        sizes: list[int] = []
        for position, entry in enumerate(entries):
            size = entry_size(entry)
            if size >= PUT_EVENTS_MAX_BYTES:
                outcomes[position] = DeliveryFailure(
                    "EntryTooLarge",
                    f"{size} bytes; EventBridge takes less than {PUT_EVENTS_MAX_BYTES} per request",
                    retryable=False,
                )
            else:
                sendable.append(position)
                sizes.append(size)
        bus_failure: DeliveryFailure | None = None
        for chunk in put_events_chunks(sizes):
            positions = [sendable[i] for i in chunk]
            if bus_failure is None:
                bus_failure = await self._put(positions, entries, outcomes)
            else:  # the bus is failing: do not wait out a timeout per chunk
                for position in positions:
                    outcomes[position] = bus_failure
        return outcomes

    async def _put(
        self,
        positions: list[int],
        entries: list[dict[str, Any]],
        outcomes: list[DeliveryFailure | None],
    ) -> DeliveryFailure | None:
        """Sends one request; fills outcomes; returns the failure when the bus failed."""
        try:
            response = await self.client.put_events(Entries=[entries[p] for p in positions])
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "ClientError")
            message = str(error.get("Message") or exc)
            if code in NON_RETRYABLE_CODES:
                if len(positions) > 1:
                    # One invalid entry fails the whole request: halve it to find that
                    # entry, so the others still go.
                    middle = len(positions) // 2
                    failed = await self._put(positions[:middle], entries, outcomes)
                    if failed is not None:
                        for position in positions[middle:]:
                            outcomes[position] = failed
                        return failed
                    return await self._put(positions[middle:], entries, outcomes)
                outcomes[positions[0]] = DeliveryFailure(code, message, retryable=False)
                return None
            failure = DeliveryFailure(code, message, retryable=True, bus_failed=True)
        except (BotoCoreError, OSError, TimeoutError) as exc:  # aiobotocore wraps aiohttp's
            failure = DeliveryFailure(type(exc).__name__, str(exc), retryable=True, bus_failed=True)
        else:
            for position, result in zip(positions, response["Entries"], strict=True):
                code = result.get("ErrorCode")
                if code:
                    outcomes[position] = DeliveryFailure(
                        code,
                        result.get("ErrorMessage") or "",
                        retryable=code not in NON_RETRYABLE_CODES,
                    )
            return None
        for position in positions:
            outcomes[position] = failure
        return failure


# --- the relay -------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayPolicy:
    """How the relay claims, retries, gives up and cleans up (seconds unless named)."""

    batch_size: int = 100
    poll_interval: float = 1.0
    # A claimed row is another relay's to take after this (a crashed relay's rows).
    lease: float = 120.0
    # Failed tries after which a row the bus refused is dead-lettered. Every failed try
    # counts, but a failure of the bus as a whole never dead-letters a row by itself.
    max_attempts: int = 10
    # Per-row backoff: about retry_base * 2**(attempts-1), at most retry_cap, jittered.
    retry_base: float = 1.0
    retry_cap: float = 300.0
    # Longest pause of the loop while the bus is failing.
    max_idle_backoff: float = 30.0
    # Published rows are deleted after this, checked every prune_interval.
    retention: float = 7 * 24 * 3600.0
    prune_interval: float = 600.0
    # Backlog measured every stats_interval; a warning logged while older than this.
    stats_interval: float = 15.0
    backlog_alert_age: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RelayPolicy:
        """CLOUDSHELF_OUTBOX_MAX_ATTEMPTS, CLOUDSHELF_OUTBOX_RETRY_CAP_SECONDS,
        CLOUDSHELF_OUTBOX_RETENTION_HOURS, CLOUDSHELF_OUTBOX_BACKLOG_ALERT_SECONDS."""
        default = cls()
        return cls(
            max_attempts=int(
                env_float("CLOUDSHELF_OUTBOX_MAX_ATTEMPTS", default.max_attempts, environ)
            ),
            retry_cap=env_float("CLOUDSHELF_OUTBOX_RETRY_CAP_SECONDS", default.retry_cap, environ),
            retention=3600.0
            * env_float("CLOUDSHELF_OUTBOX_RETENTION_HOURS", default.retention / 3600, environ),
            backlog_alert_age=env_float(
                "CLOUDSHELF_OUTBOX_BACKLOG_ALERT_SECONDS", default.backlog_alert_age, environ
            ),
        )

    def retry_delay(self, attempts: int, *, bus_failed: bool = False) -> float:
        """Seconds before the next try of a row that has failed `attempts` times: doubling,
        capped, with jitter so rows that failed together do not retry together. After a
        failure of the bus the cap is max_idle_backoff: the rows follow the loop, and flow
        again soon after the bus is back."""
        cap = self.max_idle_backoff if bus_failed else self.retry_cap
        delay = min(cap, self.retry_base * 2.0 ** max(attempts - 1, 0))
        return delay / 2 + random.uniform(0, delay / 2)


@dataclass
class RoundResult:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    # The bus failed as a whole in this round: the loop backs off.
    bus_failed: bool = False


@dataclass(frozen=True)
class Backlog:
    # Seconds since the oldest unpublished row was written; 0 when there is none.
    oldest_unpublished_age: float
    dead_letters: int


@dataclass(frozen=True)
class DeadLetter:
    id: str
    event_type: str
    subject: str
    aggregate_version: int
    attempts: int
    reason: str
    created_at: datetime
    dead_at: datetime


async def list_dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool, tables: OutboxTables, limit: int = 100
) -> list[DeadLetter]:
    rows = await conn.fetch(
        "SELECT id, event_type, aggregate_id, aggregate_version, attempts, reason, created_at, "
        f"dead_at FROM {tables.dead_letters} ORDER BY dead_at, id LIMIT $1",
        limit,
    )
    return [
        DeadLetter(
            id=str(row["id"]),
            event_type=row["event_type"],
            subject=row["aggregate_id"],
            aggregate_version=row["aggregate_version"],
            attempts=row["attempts"],
            reason=row["reason"],
            created_at=row["created_at"],
            dead_at=row["dead_at"],
        )
        for row in rows
    ]


async def replay_dead_letter(
    conn: asyncpg.Connection | asyncpg.Pool, tables: OutboxTables, event_id: str
) -> bool:
    """Moves a dead letter back to the outbox, due now with its attempts reset; the relay
    sends it on its next round. Returns False when there is no such dead letter."""
    moved = await conn.fetchval(
        f"WITH moved AS (DELETE FROM {tables.dead_letters} WHERE id = $1 "
        f"RETURNING {_EVENT_COLUMNS}) "
        f"INSERT INTO {tables.outbox} ({_EVENT_COLUMNS}, attempts, next_attempt_at) "
        f"SELECT {_EVENT_COLUMNS}, 0, now() FROM moved RETURNING id",
        uuid.UUID(event_id),
    )
    return moved is not None


class OutboxRelay:
    """Moves outbox rows to the event bus (see the module's docstring). Several replicas
    may run: each row is claimed by one relay at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        tables: OutboxTables,
        publisher: Publisher,
        policy: RelayPolicy | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.pool = pool
        self.tables = tables
        self.publisher = publisher
        self.policy = policy or RelayPolicy()
        self.backlog: Backlog | None = None
        self._wake = asyncio.Event()
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(__name__, meter_provider=meter_provider)
        meter.create_observable_gauge(
            "cloudshelf.outbox.oldest_unpublished_age",
            callbacks=[self._observe_age],
            unit="s",
            description="Age of the oldest outbox row not yet published (0: none waiting)",
        )
        meter.create_observable_gauge(
            "cloudshelf.outbox.dead_letters",
            callbacks=[self._observe_dead_letters],
            description="Events in the dead-letter table, waiting for an operator",
        )

    def wake(self) -> None:
        """Called after a commit that wrote events, to send them without waiting a poll."""
        self._wake.set()

    # --- one round -----------------------------------------------------------------------

    async def claim(self) -> list[Event]:
        """Leases up to batch_size due rows to this relay, oldest due first."""
        rows = await self.pool.fetch(
            f"WITH claimed AS (UPDATE {self.tables.outbox} "
            "SET claimed_until = now() + $2 * interval '1 second' "
            f"WHERE id IN (SELECT id FROM {self.tables.outbox} "
            "WHERE published_at IS NULL AND next_attempt_at <= now() "
            "AND (claimed_until IS NULL OR claimed_until < now()) "
            "ORDER BY next_attempt_at, created_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_EVENT_COLUMNS}, attempts) "
            # An UPDATE returns rows in no particular order; send them in the order written.
            "SELECT * FROM claimed ORDER BY created_at, id",
            self.policy.batch_size,
            self.policy.lease,
        )
        return [_event_from_row(row) for row in rows]

    async def relay_once(self) -> RoundResult:
        """Claims due rows, publishes them, records each outcome."""
        with suppress_instrumentation():  # an idle poll leaves no trace
            events = await self.claim()
        if not events:
            return RoundResult()
        with self._tracer.start_as_current_span(
            "outbox relay",
            context=Context(),  # a root: the round serves many producers, linked below
            kind=SpanKind.PRODUCER,
            links=list(trace_links(events)),
            attributes={
                "messaging.operation.type": "send",
                "messaging.batch.message_count": len(events),
                "cloudshelf.outbox.table": self.tables.outbox,
            },
        ) as span:
            result = await self._record(events, await self._publish(events))
            span.set_attributes(
                {
                    "cloudshelf.outbox.delivered": result.delivered,
                    "cloudshelf.outbox.retried": result.retried,
                    "cloudshelf.outbox.dead_lettered": result.dead_lettered,
                }
            )
        return result

    async def _publish(self, events: Sequence[Event]) -> list[DeliveryFailure | None]:
        try:
            return await self.publisher.publish(events)
        except Exception as exc:  # a fault of ours, maybe caused by one event
            if len(events) > 1:
                # One event at a time, so an event that breaks the publisher fails alone.
                return [(await self._publish([event]))[0] for event in events]
            log.exception("outbox publisher failed on event %s", events[0].id)
            return [DeliveryFailure(type(exc).__name__, str(exc), retryable=True)]

    async def _record(
        self, events: Sequence[Event], outcomes: Sequence[DeliveryFailure | None]
    ) -> RoundResult:
        result = RoundResult(claimed=len(events))
        delivered: list[uuid.UUID] = []
        retry: list[tuple[uuid.UUID, str, float]] = []
        dead: list[tuple[uuid.UUID, str]] = []
        for event, failure in zip(events, outcomes, strict=True):
            event_id = uuid.UUID(event.id)
            attempts = event.attempts + 1
            if failure is None:
                delivered.append(event_id)
            elif not failure.retryable:
                dead.append((event_id, failure.reason))
            elif not failure.bus_failed and attempts >= self.policy.max_attempts:
                dead.append((event_id, f"gave up after {attempts} attempts: {failure.reason}"))
            else:
                delay = self.policy.retry_delay(attempts, bus_failed=failure.bus_failed)
                retry.append((event_id, failure.reason, delay))
            result.bus_failed |= failure is not None and failure.bus_failed
        async with self.pool.acquire() as conn, conn.transaction():
            if delivered:
                await conn.execute(
                    f"UPDATE {self.tables.outbox} SET published_at = now(), "
                    "claimed_until = NULL, last_error = NULL WHERE id = ANY($1::uuid[])",
                    delivered,
                )
            if retry:
                ids, errors, delays = zip(*retry, strict=True)
                await conn.execute(
                    f"UPDATE {self.tables.outbox} o SET attempts = o.attempts + 1, "
                    "last_error = f.error, claimed_until = NULL, "
                    "next_attempt_at = now() + f.delay * interval '1 second' "
                    "FROM unnest($1::uuid[], $2::text[], $3::float8[]) AS f(id, error, delay) "
                    "WHERE o.id = f.id",
                    list(ids),
                    list(errors),
                    list(delays),
                )
            if dead:
                await self._dead_letter(conn, dead)
        result.delivered, result.retried, result.dead_lettered = (
            len(delivered),
            len(retry),
            len(dead),
        )
        if retry:
            log.warning(
                "%d events not delivered, retrying later: %s",
                len(retry),
                retry[0][1],
                extra={"outbox": self.tables.outbox},
            )
        for event_id, reason in dead:
            log.error(
                "event %s moved to the dead letters: %s",
                event_id,
                reason,
                extra={"outbox": self.tables.dead_letters},
            )
        return result

    async def _dead_letter(
        self, conn: asyncpg.Connection, dead: Sequence[tuple[uuid.UUID, str]]
    ) -> None:
        ids, reasons = zip(*dead, strict=True)
        columns = ", ".join(f"o.{c.strip()}" for c in _EVENT_COLUMNS.split(","))
        await conn.execute(
            f"WITH moved AS (DELETE FROM {self.tables.outbox} o "
            "USING unnest($1::uuid[], $2::text[]) AS r(id, reason) WHERE o.id = r.id "
            f"RETURNING {columns}, o.attempts + 1 AS attempts, r.reason) "
            f"INSERT INTO {self.tables.dead_letters} ({_EVENT_COLUMNS}, attempts, reason) "
            f"SELECT {_EVENT_COLUMNS}, attempts, reason FROM moved "
            "ON CONFLICT (id) DO UPDATE SET attempts = excluded.attempts, "
            "reason = excluded.reason, dead_at = now()",
            list(ids),
            list(reasons),
        )

    # --- housekeeping --------------------------------------------------------------------

    async def prune(self, batch: int = 5000) -> int:
        """Deletes rows published longer than `retention` ago; returns how many."""
        deleted = 0
        while True:
            status = await self.pool.execute(
                f"DELETE FROM {self.tables.outbox} WHERE id IN (SELECT id FROM "
                f"{self.tables.outbox} WHERE published_at < now() - $1 * interval '1 second' "
                "LIMIT $2)",
                self.policy.retention,
                batch,
            )
            count = int(status.split()[-1])
            deleted += count
            if count < batch:
                return deleted

    async def measure_backlog(self) -> Backlog:
        """Reads the age of the oldest unpublished row and the dead letters; kept for the
        gauges, and logged as a warning while the age exceeds backlog_alert_age."""
        row = await self.pool.fetchrow(
            "SELECT coalesce(extract(epoch FROM now() - "
            f"(SELECT min(created_at) FROM {self.tables.outbox} WHERE published_at IS NULL))"
            f", 0)::float8 AS age, (SELECT count(*) FROM {self.tables.dead_letters}) AS dead"
        )
        self.backlog = Backlog(max(row["age"], 0.0), row["dead"])
        if self.backlog.oldest_unpublished_age > self.policy.backlog_alert_age:
            log.warning(
                "outbox backlog: the oldest unpublished event is %.0fs old",
                self.backlog.oldest_unpublished_age,
                extra={
                    "outbox": self.tables.outbox,
                    "oldest_unpublished_age_seconds": round(self.backlog.oldest_unpublished_age),
                    "dead_letters": self.backlog.dead_letters,
                },
            )
        return self.backlog

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.backlog is not None:
            yield Observation(self.backlog.oldest_unpublished_age, {"outbox": self.tables.outbox})

    def _observe_dead_letters(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.backlog is not None:
            yield Observation(self.backlog.dead_letters, {"outbox": self.tables.outbox})

    async def _housekeeping(self, now: float, due: dict[str, float]) -> None:
        with suppress_instrumentation():
            if now >= due["stats"]:
                due["stats"] = now + self.policy.stats_interval
                await self.measure_backlog()
            if now >= due["prune"]:
                due["prune"] = now + self.policy.prune_interval
                pruned = await self.prune()
                if pruned:
                    log.info("outbox: pruned %d published events", pruned)

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Relays until cancelled. While the bus or the database fails, the loop waits
        (doubling up to max_idle_backoff) and ignores wake-ups from new writes."""
        loop = asyncio.get_running_loop()
        due = {"stats": 0.0, "prune": 0.0}
        failures = 0
        while True:
            result = RoundResult()
            try:
                result = await self.relay_once()
                if result.claimed:  # an empty round says nothing about the bus
                    failures = failures + 1 if result.bus_failed else 0
            except Exception as exc:
                failures += 1
                log.warning("outbox relay round failed (%s): %s", type(exc).__name__, exc)
            try:
                await self._housekeeping(loop.time(), due)
            except Exception as exc:
                log.warning("outbox housekeeping failed (%s): %s", type(exc).__name__, exc)
            if failures == 0 and result.claimed >= self.policy.batch_size:
                continue  # more are waiting
            if failures:
                delay = min(self.policy.poll_interval * 2**failures, self.policy.max_idle_backoff)
                self._wake.clear()
                await asyncio.sleep(delay * random.uniform(0.8, 1.0))
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.policy.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()


def trace_links(events: Sequence[Event]) -> Iterator[Link]:
    """A link to the producing span of each event that carries a trace context."""
    seen: set[tuple[int, int]] = set()
    for event in events:
        if not event.traceparent:
            continue
        carrier = {"traceparent": event.traceparent}
        if event.tracestate:
            carrier["tracestate"] = event.tracestate
        context = trace.get_current_span(_TRACE_CONTEXT.extract(carrier)).get_span_context()
        key = (context.trace_id, context.span_id)
        if context.is_valid and key not in seen:
            seen.add(key)
            yield Link(context, {"cloudshelf.event.id": event.id})
