"""The outbox relay on a real PostgreSQL database of its own, publishing to a stand-in
EventBridge client that keeps AWS's PutEvents rules (10 entries, under 256 KB per request)
and fails on demand: poison rows, a down bus, oversized batches, dead letters and their
replay, pruning, ordering by aggregate version, the backlog gauge and the relay's spans."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError, EndpointConnectionError
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloudshelf import cli
from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.runtime.events import (
    PUT_EVENTS_MAX_BYTES,
    EventBridgePublisher,
    OutboxRelay,
    RelayPolicy,
    entry_size,
    new_event,
    write_outbox,
)
from cloudshelf.runtime.migrations import MigrationRunner, migrations_of
from cloudshelf.runtime.stores import init_postgres_connection
from services.catalog.books import BookStore, author_links, columns_for_create, columns_for_update
from services.catalog.outbox import EVENT_SOURCE, OUTBOX
from tests.factories import book, usd

Entry = dict[str, Any]


@dataclass
class FakeEventBridge:
    """PutEvents as AWS documents it (at most 10 entries whose sizes total under 256 KB,
    else the whole request fails with ValidationException), plus failures on demand."""

    down: bool = False
    # entry -> an error code for that entry (e.g. "InternalFailure"), or None to accept it
    refuse: Callable[[Entry], str | None] = lambda entry: None
    # entry -> True when that entry makes AWS reject the whole request
    reject_request: Callable[[Entry], bool] = lambda entry: False
    calls: list[list[Entry]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    async def put_events(self, Entries: list[Entry]) -> dict[str, Any]:
        self.calls.append(Entries)
        if self.down:
            raise EndpointConnectionError(endpoint_url="https://events.local")
        total = sum(entry_size(e) for e in Entries)
        if (
            len(Entries) > 10
            or total >= PUT_EVENTS_MAX_BYTES
            or any(map(self.reject_request, Entries))
        ):
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": f"{total} bytes"}},
                "PutEvents",
            )
        results = []
        for entry in Entries:
            code = self.refuse(entry)
            if code:
                results.append({"ErrorCode": code, "ErrorMessage": f"refused: {code}"})
            else:
                self.delivered.append(json.loads(entry["Detail"]))
                results.append({"EventId": str(uuid.uuid4())})
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}

    def delivered_subjects(self) -> list[str]:
        return [e["subject"] for e in self.delivered]


def subject_of(entry: Entry) -> str:
    return str(json.loads(entry["Detail"])["subject"])


@pytest_asyncio.fixture
async def pool(catalog_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(catalog_dsn, init=init_postgres_connection) as created:
        yield created


def relay_for(
    pool: asyncpg.Pool, bus: FakeEventBridge, policy: RelayPolicy | None = None, **kwargs: Any
) -> OutboxRelay:
    return OutboxRelay(
        pool, OUTBOX, EventBridgePublisher(bus, "test-bus", EVENT_SOURCE), policy, **kwargs
    )


async def write_events(pool: asyncpg.Pool, subjects: list[str], padding: int = 0) -> list[str]:
    """One event per subject, in one transaction (padding: that many more bytes of data)."""
    events = []
    for subject in subjects:
        data = pb.BookUpdatedEvent(book_id=1, after=pb.Book(description="x" * padding))
        events.append(new_event("test.event", subject, 1, data))
    async with pool.acquire() as conn, conn.transaction():
        await write_outbox(conn, OUTBOX, events)
    return [e.id for e in events]


async def outbox_row(pool: asyncpg.Pool, event_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow(
        "SELECT * FROM book_catalog.outbox WHERE id = $1",
        uuid.UUID(event_id),
    )
    return row


async def test_poison_rows_never_hold_back_healthy_ones(pool: asyncpg.Pool) -> None:
    def refuse(entry: Entry) -> str | None:
        subject = subject_of(entry)
        if subject.startswith("poison"):
            return "InternalFailure"  # retryable, but it never gets better
        return "MalformedDetail" if subject == "malformed" else None

    bus = FakeEventBridge(
        refuse=refuse, reject_request=lambda e: subject_of(e) == "breaks-the-request"
    )
    relay = relay_for(pool, bus, RelayPolicy(batch_size=100, retry_base=30))
    # More failing rows than a batch, all older than the healthy ones.
    await write_events(pool, [f"poison-{i}" for i in range(150)])
    await write_events(pool, ["malformed", "breaks-the-request"])
    healthy = await write_events(pool, [f"healthy-{i}" for i in range(25)])

    for _ in range(3):
        await relay.relay_once()
    assert sorted(bus.delivered_subjects()) == sorted(f"healthy-{i}" for i in range(25))
    for event_id in healthy:
        assert (await outbox_row(pool, event_id))["published_at"] is not None
    # Each failing row waits on its own schedule, with its error kept.
    poison = await pool.fetch(
        "SELECT attempts, last_error, next_attempt_at > now() AS waiting FROM "
        "book_catalog.outbox WHERE aggregate_id LIKE 'poison-%'"
    )
    assert len(poison) == 150
    assert {(r["attempts"], r["waiting"]) for r in poison} == {(1, True)}
    assert {r["last_error"] for r in poison} == {"InternalFailure: refused: InternalFailure"}
    # Invalid events are dead letters at once: the one the bus refused, and the one that
    # failed its whole request (found by halving the request; its companions went through).
    dead = {
        r["aggregate_id"]: r["reason"]
        for r in await pool.fetch("SELECT * FROM book_catalog.outbox_dead_letters")
    }
    assert dead.keys() == {"malformed", "breaks-the-request"}
    assert dead["malformed"].startswith("MalformedDetail")
    assert dead["breaks-the-request"].startswith("ValidationException")


async def test_a_down_bus_backs_the_relay_off_and_dead_letters_nothing(
    pool: asyncpg.Pool,
) -> None:
    bus = FakeEventBridge(down=True)
    policy = RelayPolicy(poll_interval=0.1, max_idle_backoff=1.6, max_attempts=2)
    relay = relay_for(pool, bus, policy)
    ids = await write_events(pool, [f"book-{i}" for i in range(30)])
    task = asyncio.create_task(relay.run())
    try:
        # Writers keep waking the relay; while the bus is down it must not hurry.
        watched_until = time.monotonic() + 3
        while time.monotonic() < watched_until:
            relay.wake()
            await asyncio.sleep(0.05)
        # Without backoff: a call per poll or wake-up (~60). With it, calls are at least
        # 0.5, 1.0, then 0.8 s apart, one request each (a round stops at the first failure).
        assert 2 <= len(bus.calls) <= 5, len(bus.calls)
        row = await outbox_row(pool, ids[0])
        assert row["published_at"] is None and row["attempts"] >= 2
        assert row["last_error"].startswith("EndpointConnectionError")
        # An outage is not the event's fault: past max_attempts, still not dead-lettered.
        assert await pool.fetchval("SELECT count(*) FROM book_catalog.outbox_dead_letters") == 0

        bus.down = False
        deadline = time.monotonic() + 10
        while len(bus.delivered) < 30:
            assert time.monotonic() < deadline, f"{len(bus.delivered)} of 30 delivered"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert sorted(bus.delivered_subjects()) == sorted(f"book-{i}" for i in range(30))


async def test_an_oversized_batch_is_split_by_bytes(pool: asyncpg.Pool) -> None:
    bus = FakeEventBridge()
    relay = relay_for(pool, bus)
    # The review's case: 15 events of ~27 KB, fine one by one, 405 KB together; plus a
    # description of 20,000 CJK characters before and after (~120 KB: 3 bytes a character,
    # unescaped), and one event too large to send at all.
    await write_events(pool, [f"big-{i}" for i in range(15)], padding=27_000)
    cjk = pb.BookUpdatedEvent(
        book_id=2,
        before=pb.Book(description="書" * 20_000),
        after=pb.Book(description="本" * 20_000),
    )
    huge = new_event(
        "test.event", "huge", 1, pb.BookUpdatedEvent(after=pb.Book(title="y" * 300_000))
    )
    async with pool.acquire() as conn:
        await write_outbox(conn, OUTBOX, [new_event("test.event", "cjk", 1, cjk), huge])

    result = await relay.relay_once()
    assert (result.delivered, result.dead_lettered) == (16, 1)
    assert sorted(bus.delivered_subjects()) == sorted([*(f"big-{i}" for i in range(15)), "cjk"])
    assert all(sum(entry_size(e) for e in call) < PUT_EVENTS_MAX_BYTES for call in bus.calls)
    assert all(len(call) <= 10 for call in bus.calls)
    reason = await pool.fetchval(
        "SELECT reason FROM book_catalog.outbox_dead_letters WHERE id = $1", uuid.UUID(huge.id)
    )
    assert reason.startswith("EntryTooLarge")


async def test_a_dead_letter_after_the_cap_and_its_replay(
    pool: asyncpg.Pool, catalog_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    bus = FakeEventBridge(refuse=lambda e: "InternalFailure")
    relay = relay_for(pool, bus, RelayPolicy(max_attempts=3, retry_base=10))
    (event_id,) = await write_events(pool, ["unlucky"])
    waits = []
    for _ in range(3):
        before = await pool.fetchval("SELECT clock_timestamp()")
        await relay.relay_once()
        after = await pool.fetchval("SELECT clock_timestamp()")
        row = await outbox_row(pool, event_id)
        if row is not None:
            # The wait was set between `before` and `after`: bound it from both sides.
            waits.append(
                (
                    (row["next_attempt_at"] - after).total_seconds(),
                    (row["next_attempt_at"] - before).total_seconds(),
                )
            )
            await pool.execute(  # due now, rather than waiting it out
                "UPDATE book_catalog.outbox SET next_attempt_at = now() WHERE id = $1",
                uuid.UUID(event_id),
            )
    # Exponential: 5-10 s, then 10-20 s (the upper half jittered), dead on the third.
    assert len(waits) == 2, waits
    assert waits[0][0] <= 10 and waits[0][1] >= 5, waits
    assert waits[1][0] <= 20 and waits[1][1] >= 10, waits
    assert await outbox_row(pool, event_id) is None
    dead = await pool.fetchrow(
        "SELECT * FROM book_catalog.outbox_dead_letters WHERE id = $1", uuid.UUID(event_id)
    )
    assert dead["attempts"] == 3
    assert dead["reason"] == "gave up after 3 attempts: InternalFailure: refused: InternalFailure"

    # The operator's view and replay, through the CLI.
    monkeypatch.setenv("CLOUDSHELF_POSTGRES_DSN", catalog_dsn)
    code = await asyncio.to_thread(cli.main, ["outbox", "dead-letters", "--service", "catalog"])
    listed = capsys.readouterr().out
    assert code == 0 and event_id in listed and "gave up after 3 attempts" in listed
    missing = str(uuid.uuid4())
    assert (
        await asyncio.to_thread(cli.main, ["outbox", "replay", missing, "--service", "catalog"])
        == 1
    )
    bus.refuse = lambda e: None
    assert (
        await asyncio.to_thread(cli.main, ["outbox", "replay", event_id, "--service", "catalog"])
        == 0
    )
    row = await outbox_row(pool, event_id)
    assert row["attempts"] == 0 and row["published_at"] is None
    await relay.relay_once()
    assert bus.delivered_subjects() == ["unlucky"]
    assert await pool.fetchval("SELECT count(*) FROM book_catalog.outbox_dead_letters") == 0
    await asyncio.to_thread(cli.main, ["outbox", "dead-letters", "--service", "catalog"])
    assert "no dead letters" in capsys.readouterr().out


async def test_published_rows_are_pruned_after_the_retention_period(pool: asyncpg.Pool) -> None:
    bus = FakeEventBridge()
    relay = relay_for(pool, bus, RelayPolicy(retention=3600))
    old = await write_events(pool, ["old-1", "old-2"])
    await write_events(pool, ["recent"])
    await relay.relay_once()
    await pool.execute(
        "UPDATE book_catalog.outbox SET published_at = now() - interval '2 hours' "
        "WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in old],
    )
    bus.down = True
    waiting = await write_events(pool, ["unpublished"])
    await pool.execute(
        "UPDATE book_catalog.outbox SET created_at = now() - interval '2 hours' WHERE id = $1",
        uuid.UUID(waiting[0]),
    )
    assert await relay.prune() == 2
    left = {r["aggregate_id"] for r in await pool.fetch("SELECT * FROM book_catalog.outbox")}
    # Unpublished rows stay, however old.
    assert left == {"recent", "unpublished"}


async def test_a_consumer_keeping_the_highest_version_ends_on_the_latest_change(
    pool: asyncpg.Pool,
) -> None:
    """A transient failure of one event reorders delivery; aggregate_version (from the
    database) lets a consumer end on the right state anyway."""
    books = BookStore(pool)
    book_id = await books.create(columns_for_create(book()), author_links(book()))
    for cents in (1500, 1200, 900):
        update = pb.Book(id=book_id, price=usd(cents))
        await books.update(book_id, columns_for_update(update, ["price"]), None)
    # The bus fails the 1200 update once: it arrives after the 900 one.
    failed_once: set[str] = set()

    def refuse(entry: Entry) -> str | None:
        detail = json.loads(entry["Detail"])
        if (
            detail["type"] == "book.updated"
            and detail["data"]["after"]["price"]["minor_units"] == "1200"
            and detail["id"] not in failed_once
        ):
            failed_once.add(detail["id"])
            return "ThrottlingException"
        return None

    bus = FakeEventBridge(refuse=refuse)
    relay = relay_for(pool, bus, RelayPolicy(retry_base=0.01))
    await relay.relay_once()
    await asyncio.sleep(0.05)
    await relay.relay_once()

    versions = [int(e["aggregate_version"]) for e in bus.delivered]
    assert len(versions) == 4 and versions[-1] < versions[-2]  # the retried one came last
    state: dict[str, tuple[int, dict[str, Any]]] = {}
    for event in bus.delivered:  # a last-writer-wins consumer, by version
        data = event["data"].get("after") or event["data"]["book"]
        held = state.get(event["subject"])
        if held is None or int(event["aggregate_version"]) > held[0]:
            state[event["subject"]] = (int(event["aggregate_version"]), data)
    version, latest = state[str(book_id)]
    assert latest["price"]["minor_units"] == "900"
    assert version == await pool.fetchval(
        "SELECT version FROM book_catalog.books WHERE id = $1", book_id
    )


async def test_two_relays_share_the_outbox_without_sending_a_row_twice(pool: asyncpg.Pool) -> None:
    bus = FakeEventBridge()
    relays = [relay_for(pool, bus, RelayPolicy(batch_size=20)) for _ in range(2)]
    await write_events(pool, [f"shared-{i}" for i in range(200)])

    async def drain(relay: OutboxRelay) -> None:
        while (await relay.relay_once()).claimed:
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    assert sorted(bus.delivered_subjects()) == sorted(f"shared-{i}" for i in range(200))


async def test_rows_of_a_relay_that_died_are_taken_over_after_the_lease(
    pool: asyncpg.Pool,
) -> None:
    bus = FakeEventBridge()
    crashed = relay_for(pool, bus, RelayPolicy(lease=60))
    survivor = relay_for(pool, bus)
    await write_events(pool, ["orphan"])
    assert len(await crashed.claim()) == 1  # claimed, then the process died
    assert (await survivor.relay_once()).claimed == 0  # still leased
    await pool.execute(  # a minute later
        "UPDATE book_catalog.outbox SET claimed_until = claimed_until - interval '61 seconds'"
    )
    assert (await survivor.relay_once()).delivered == 1
    assert bus.delivered_subjects() == ["orphan"]


async def test_the_age_of_the_oldest_unpublished_row_is_measured_and_exported(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    bus = FakeEventBridge(down=True)
    relay = relay_for(
        pool,
        bus,
        RelayPolicy(backlog_alert_age=60),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    (stuck,) = await write_events(pool, ["stuck"])
    await pool.execute(
        "UPDATE book_catalog.outbox SET created_at = now() - interval '10 minutes' WHERE id = $1",
        uuid.UUID(stuck),
    )
    with caplog.at_level(logging.WARNING, logger="cloudshelf.events"):
        backlog = await relay.measure_backlog()
    assert 600 <= backlog.oldest_unpublished_age < 660
    (warning,) = [r for r in caplog.records if "backlog" in r.getMessage()]
    assert warning.oldest_unpublished_age_seconds >= 600  # type: ignore[attr-defined]
    assert (
        gauge(reader, "cloudshelf.outbox.oldest_unpublished_age") == backlog.oldest_unpublished_age
    )

    bus.down = False
    await relay.relay_once()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cloudshelf.events"):
        assert (await relay.measure_backlog()).oldest_unpublished_age == 0
    assert "backlog" not in caplog.text
    assert gauge(reader, "cloudshelf.outbox.oldest_unpublished_age") == 0


def gauge(reader: InMemoryMetricReader, name: str) -> float:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    return float(metric.data.data_points[-1].value)  # type: ignore[union-attr]
    raise AssertionError(f"no gauge {name}")


@pytest.fixture
def traced_asyncpg() -> Iterator[InMemorySpanExporter]:
    """asyncpg instrumented as in a service, into spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    exporter.provider = provider  # type: ignore[attr-defined]
    yield exporter
    instrumentor.uninstrument()


async def test_idle_polls_leave_no_spans_and_a_round_is_one_linked_span(
    pool: asyncpg.Pool, traced_asyncpg: InMemorySpanExporter
) -> None:
    provider: TracerProvider = traced_asyncpg.provider  # type: ignore[attr-defined]
    relay = relay_for(pool, FakeEventBridge(), tracer_provider=provider)
    for _ in range(5):
        assert (await relay.relay_once()).claimed == 0
    assert traced_asyncpg.get_finished_spans() == ()

    producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    carrier = {
        "traceparent": f"00-{producer_trace}-00f067aa0ba902b7-01",
        "tracestate": "shop=checkout",
    }
    token = otel_context.attach(propagate.extract(carrier))
    try:
        event = new_event("test.event", "traced", 1, pb.InventoryAdjustedEvent(book_id=1))
    finally:
        otel_context.detach(token)
    assert (event.traceparent, event.tracestate) == (carrier["traceparent"], "shop=checkout")
    async with pool.acquire() as conn:
        await write_outbox(conn, OUTBOX, [event])
    traced_asyncpg.clear()  # the write above is the test's own

    assert (await relay.relay_once()).delivered == 1
    spans = traced_asyncpg.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["outbox relay"]
    (round_span,) = roots
    assert [format(link.context.trace_id, "032x") for link in round_span.links] == [producer_trace]
    assert round_span.links[0].context.trace_state.get("shop") == "checkout"
    # Everything else in the round (marking rows published) is inside its span.
    assert {s.context.trace_id for s in spans} == {round_span.context.trace_id}


async def test_books_publish_versions_read_in_their_transaction(pool: asyncpg.Pool) -> None:
    books = BookStore(pool)
    book_id = await books.create(columns_for_create(book()), author_links(book()))
    await books.update(
        book_id, columns_for_update(pb.Book(id=book_id, title="Second"), ["title"]), None
    )
    await books.adjust_inventory({book_id: (3, 0)}, None)
    rows = await pool.fetch(
        "SELECT event_type, aggregate_version, data_type FROM book_catalog.outbox "
        "WHERE aggregate_id = $1 ORDER BY created_at, aggregate_version",
        str(book_id),
    )
    assert [r["event_type"] for r in rows] == ["book.created", "book.updated", "inventory.adjusted"]
    assert [r["data_type"] for r in rows] == [
        "cloudshelf.catalog.v1.BookCreatedEvent",
        "cloudshelf.catalog.v1.BookUpdatedEvent",
        "cloudshelf.catalog.v1.InventoryAdjustedEvent",
    ]
    versions = [r["aggregate_version"] for r in rows]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert versions[-1] == await pool.fetchval(
        "SELECT version FROM book_catalog.books WHERE id = $1", book_id
    )


async def test_going_down_from_the_relay_migration_keeps_dead_letters(
    pool: asyncpg.Pool, catalog_dsn: str
) -> None:
    bus = FakeEventBridge(refuse=lambda e: "MalformedDetail")
    (event_id,) = await write_events(pool, ["kept"])
    await relay_for(pool, bus).relay_once()
    assert await pool.fetchval("SELECT count(*) FROM book_catalog.outbox_dead_letters") == 1
    await pool.expire_connections()
    runner = MigrationRunner(catalog_dsn, migrations_of("services.catalog"), "catalog")
    assert (await runner.to(202511101))[-1] == "down 202511102 outbox relay"
    row = await pool.fetchrow(
        "SELECT published_at, last_error FROM book_catalog.outbox WHERE id = $1",
        uuid.UUID(event_id),
    )
    assert row["published_at"] is None and row["last_error"].startswith("MalformedDetail")
    assert (await runner.up())[0] == "up 202511102 outbox relay"
