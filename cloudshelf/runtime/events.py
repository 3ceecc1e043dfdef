"""Integration events: the transactional outbox and its relay to EventBridge.

A service writes its events into its own outbox table in the same transaction as the data
change (`write_outbox`), so a committed change always has its events and a rolled-back one
has none. `OutboxRelay` publishes unpublished rows after commit and keeps retrying failed
ones until they are delivered; each event carries a unique id for consumers to de-duplicate
(delivery is at-least-once) and the producer's W3C trace context.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry import propagate

log = logging.getLogger("cloudshelf.events")

# EventBridge accepts at most 10 entries per PutEvents call.
_PUT_EVENTS_LIMIT = 10


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    aggregate_id: str
    data: Mapping[str, Any]
    traceparent: str | None
    occurred_at: datetime

    def envelope(self, source: str) -> dict[str, Any]:
        """The JSON form of cloudshelf.common.v1.EventEnvelope."""
        envelope: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "source": source,
            "occurredAt": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "dataJson": json.dumps(self.data, default=str),
        }
        if self.traceparent:
            envelope["traceparent"] = self.traceparent
        return envelope


def new_event(event_type: str, aggregate_id: str | int, data: Mapping[str, Any]) -> Event:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the current span's traceparent, if any
    return Event(
        id=str(uuid.uuid4()),
        type=event_type,
        aggregate_id=str(aggregate_id),
        data=data,
        traceparent=carrier.get("traceparent"),
        occurred_at=datetime.now(UTC),
    )


async def write_outbox(conn: asyncpg.Connection, table: str, events: Sequence[Event]) -> None:
    """Adds events to the outbox; call inside the transaction that makes the change."""
    await conn.executemany(
        f"INSERT INTO {table} (id, event_type, aggregate_id, payload, traceparent, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (uuid.UUID(e.id), e.type, e.aggregate_id, dict(e.data), e.traceparent, e.occurred_at)
            for e in events
        ],
    )


class EventBridgePublisher:
    def __init__(self, events_client: Any, bus_name: str, source: str) -> None:
        self.client = events_client
        self.bus_name = bus_name
        self.source = source

    async def publish(self, events: Sequence[Event]) -> list[str | None]:
        """Publishes events; returns per event None (delivered) or the error."""
        errors: list[str | None] = []
        for start in range(0, len(events), _PUT_EVENTS_LIMIT):
            chunk = events[start : start + _PUT_EVENTS_LIMIT]
            try:
                response = await self.client.put_events(
                    Entries=[
                        {
                            "Source": self.source,
                            "DetailType": event.type,
                            "Detail": json.dumps(event.envelope(self.source)),
                            "EventBusName": self.bus_name,
                        }
                        for event in chunk
                    ]
                )
            except Exception as exc:  # the whole call failed: every event is retried
                errors += [f"{type(exc).__name__}: {exc}"] * len(chunk)
                continue
            for entry in response["Entries"]:
                errors.append(entry.get("ErrorMessage") or entry.get("ErrorCode"))
        return errors


class OutboxRelay:
    """Moves outbox rows to the event bus. Several replicas may run: rows are claimed with
    FOR UPDATE SKIP LOCKED, so each is sent by one relay at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        table: str,
        publisher: EventBridgePublisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.table = table
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that wrote events, to send them without waiting a poll."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Sends one batch; returns how many were delivered."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT id, event_type, aggregate_id, payload, traceparent, created_at "
                f"FROM {self.table} WHERE published_at IS NULL "
                "ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                return 0
            events = [
                Event(
                    id=str(r["id"]),
                    type=r["event_type"],
                    aggregate_id=r["aggregate_id"],
                    data=r["payload"],
                    traceparent=r["traceparent"],
                    occurred_at=r["created_at"],
                )
                for r in rows
            ]
            errors = await self.publisher.publish(events)
            delivered = [r["id"] for r, error in zip(rows, errors, strict=True) if error is None]
            failed = [(r["id"], e) for r, e in zip(rows, errors, strict=True) if e is not None]
            await conn.execute(
                f"UPDATE {self.table} SET published_at = now() WHERE id = ANY($1::uuid[])",
                delivered,
            )
            if failed:
                await conn.executemany(
                    f"UPDATE {self.table} SET attempts = attempts + 1, last_error = $2 "
                    "WHERE id = $1",
                    failed,
                )
                log.warning("%d events not delivered, will retry: %s", len(failed), failed[0][1])
            return len(delivered)

    async def run(self) -> None:
        """Relays until cancelled; backs off while the bus or the database is failing."""
        failures = 0
        while True:
            try:
                sent = await self.relay_once()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("outbox relay failed (%s): %s", type(exc).__name__, exc)
                sent = 0
            if sent >= self.batch_size:
                continue  # more waiting
            delay = min(self.poll_interval * (2**failures), 30.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._wake.clear()
