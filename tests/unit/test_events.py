"""The pure parts of the outbox relay: request sizing, backoff, the envelope's JSON form."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf import json_format

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.events import (
    PUT_EVENTS_MAX_BYTES,
    Event,
    EventBridgePublisher,
    RelayPolicy,
    entry_size,
    event_data,
    put_events_chunks,
)


def test_entry_size_counts_utf8_bytes_of_the_fields_aws_counts() -> None:
    entry = {
        "Source": "cloudshelf.catalog",  # 18
        "DetailType": "book.updated",  # 12
        "Detail": '{"t":"書"}',  # 8 characters, 10 bytes
        "Resources": ["arn:x", "é"],  # 5 + 2
        "EventBusName": "not counted",
    }
    assert entry_size(entry) == 18 + 12 + 11 + 7
    assert entry_size({**entry, "Time": datetime.now(UTC)}) == 18 + 12 + 11 + 7 + 14


def test_chunks_hold_at_most_ten_entries_under_256_kb() -> None:
    assert list(put_events_chunks([100] * 25)) == [
        list(range(10)),
        list(range(10, 20)),
        list(range(20, 25)),
    ]
    kb27 = 27 * 1024
    chunks = list(put_events_chunks([kb27] * 15))
    assert [len(c) for c in chunks] == [9, 6]  # 10 of them would be 270 KB
    assert [p for c in chunks for p in c] == list(range(15))  # order kept
    # A total of exactly 256 KB is refused by AWS ("less than 256KB"): split there too.
    half = PUT_EVENTS_MAX_BYTES // 2
    assert list(put_events_chunks([half, half, 1])) == [[0], [1, 2]]
    assert list(put_events_chunks([])) == []


def test_the_retry_delay_doubles_up_to_its_cap_with_jitter() -> None:
    policy = RelayPolicy(retry_base=1.0, retry_cap=300.0, max_idle_backoff=30.0)
    for attempts, full in ((1, 1.0), (2, 2.0), (5, 16.0), (9, 256.0), (10, 300.0), (40, 300.0)):
        delays = [policy.retry_delay(attempts) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered: rows that failed together spread out
    # After a failure of the whole bus, rows follow the loop's shorter cap.
    assert all(15.0 <= policy.retry_delay(12, bus_failed=True) <= 30.0 for _ in range(50))


def test_policy_from_environment() -> None:
    policy = RelayPolicy.from_env(
        {
            "CLOUDSHELF_OUTBOX_MAX_ATTEMPTS": "4",
            "CLOUDSHELF_OUTBOX_RETENTION_HOURS": "48",
            "CLOUDSHELF_OUTBOX_BACKLOG_ALERT_SECONDS": "90",
        }
    )
    assert (policy.max_attempts, policy.retention, policy.backlog_alert_age) == (4, 48 * 3600, 90)
    assert RelayPolicy.from_env({}) == RelayPolicy()


def test_the_detail_is_the_envelope_with_its_data_as_an_object() -> None:
    data = catalog_pb2.InventoryAdjustedEvent(book_id=7, delta=-2, stock_quantity=0)
    event = Event(
        id="6f1c1d2e-0000-4000-8000-000000000001",
        type="inventory.adjusted",
        subject="7",
        aggregate_version=12,
        data_type=data.DESCRIPTOR.full_name,
        data=event_data(data),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="shop=checkout",
        occurred_at=datetime(2026, 11, 10, 12, 0, tzinfo=UTC),
    )
    entry = EventBridgePublisher(None, "bus", "cloudshelf.catalog").entry(event)
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        "cloudshelf.catalog",
        "inventory.adjusted",
        "bus",
    )
    detail = json.loads(entry["Detail"])
    assert detail == {
        "id": event.id,
        "type": "inventory.adjusted",
        "source": "cloudshelf.catalog",
        "occurred_at": "2026-11-10T12:00:00Z",
        "traceparent": event.traceparent,
        "tracestate": "shop=checkout",
        "subject": "7",
        "aggregate_version": "12",
        "data_type": "cloudshelf.catalog.v1.InventoryAdjustedEvent",
        # Fields at their defaults are present (a rule can match stock_quantity 0).
        "data": {"book_id": "7", "delta": -2, "stock_quantity": 0, "purchased": 0},
    }
    # It parses back into the contract's messages.
    envelope = json_format.ParseDict(detail, common_pb2.EventEnvelope())
    parsed = json_format.ParseDict(
        json_format.MessageToDict(envelope.data), catalog_pb2.InventoryAdjustedEvent()
    )
    assert parsed == data and envelope.aggregate_version == 12


def test_non_ascii_data_is_not_escaped() -> None:
    data = catalog_pb2.BookCreatedEvent(book=catalog_pb2.Book(title="本" * 100))
    event = Event("id", "book.created", "1", 1, "t", event_data(data))
    detail = EventBridgePublisher(None, "bus", "s").entry(event)["Detail"]
    assert "本" * 100 in detail  # 3 bytes a character, not a 6-byte \\uXXXX escape
