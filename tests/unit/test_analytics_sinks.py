"""Pure logic of the analytics sinks and metrics: hours, keys, rounding, records, dedup."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from services.analytics.lake import RAW_SCHEMA, _row, deduplicated, event_time, partition_prefix
from services.analytics.metrics import (
    CurrencyFigures,
    HourlyMetrics,
    _average,
    last_closed_hour,
    parse_hour,
    s3_key,
)
from services.analytics.records import StreamEvent
from services.analytics.timestream import cart_records, line_changes, record_time_ns

AT = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)


def stream_event(
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: str = "e-1",
    sequence: str = "1",
    **extra: Any,
) -> StreamEvent:
    envelope = {
        "id": event_id,
        "type": event_type,
        "occurred_at": "2026-03-04T05:06:07.891234Z",
        "data": data,
        **extra,
    }
    return StreamEvent(envelope, "shardId-1", sequence, AT + timedelta(seconds=2))


def usd(minor: int) -> dict[str, str]:
    return {"minor_units": str(minor), "currency_code": "USD"}


def test_average_order_value_rounds_half_up_to_the_minor_unit() -> None:
    assert _average(3501, 2) == 1751
    assert _average(3500, 3) == 1167  # 1166.67
    assert _average(1000, 3) == 333  # 333.33
    assert _average(5, 2) == 3
    assert _average(0, 0) == 0


def test_hours_are_whole_and_in_utc() -> None:
    assert parse_hour("2026-11-26T04:00") == datetime(2026, 11, 26, 4, tzinfo=UTC)
    assert parse_hour("2026-11-26T05:00+01:00") == datetime(2026, 11, 26, 4, tzinfo=UTC)
    assert parse_hour("2026-11-26T04:00:00Z") == datetime(2026, 11, 26, 4, tzinfo=UTC)
    for text in ("2026-11-26T04:30", "2026-11-26T04:00:00.000001Z", "2026-11-26T04:00+05:30"):
        with pytest.raises(ValueError, match="whole hour"):
            parse_hour(text)
    assert last_closed_hour(datetime(2026, 11, 26, 4, 59, 59, tzinfo=UTC)) == datetime(
        2026, 11, 26, 3, tzinfo=UTC
    )
    assert last_closed_hour(datetime(2026, 11, 26, 0, 0, tzinfo=UTC)) == datetime(
        2026, 11, 25, 23, tzinfo=UTC
    )


def test_the_s3_key_is_the_seeds_without_zero_padding() -> None:
    assert s3_key(datetime(2026, 1, 2, 3, tzinfo=UTC)) == "hourly-metrics/2026/1/2/3.json"
    assert s3_key(datetime(2026, 12, 31, 23, tzinfo=UTC)) == "hourly-metrics/2026/12/31/23.json"


def test_metrics_in_a_currency_without_orders_are_zeros_and_the_json_is_stable() -> None:
    hour = datetime(2026, 1, 2, 3, tzinfo=UTC)
    usd_figures = CurrencyFigures("USD", 2, 3501, 1751)
    first = HourlyMetrics(hour, 3, 4, 0.75, {"USD": usd_figures, "EUR": CurrencyFigures("EUR", 1)})
    second = HourlyMetrics(hour, 3, 4, 0.75, {"EUR": CurrencyFigures("EUR", 1), "USD": usd_figures})
    assert first.in_currency("GBP") == CurrencyFigures("GBP")
    assert first.in_currency("USD") is usd_figures
    assert first.to_json() == second.to_json()
    document = json.loads(first.to_json())
    assert document["timestamp"] == "2026-01-02T03:00:00Z"
    assert document["byCurrency"]["USD"]["averageOrderValue"] == {
        "currencyCode": "USD",
        "minorUnits": 1751,
    }


def test_cart_value_is_the_signed_change_each_event_made() -> None:
    cases: list[tuple[str, dict[str, Any], list[tuple[int, int, str]]]] = [
        (
            "cart.item.added",
            {"book_id": "7", "quantity": 2, "unit_price": usd(1299)},
            [(7, 2598, "USD")],
        ),
        (
            "cart.item.updated",
            {"book_id": "7", "quantity": 1, "previous_quantity": 3, "unit_price": usd(100)},
            [(7, -200, "USD")],
        ),
        (
            "cart.item.removed",
            {"book_id": "7", "previous_quantity": 3, "unit_price": usd(100)},
            [(7, -300, "USD")],
        ),
        (
            "cart.cleared",
            {"removed": [{"book_id": "1", "quantity": 2, "unit_price": usd(5)}, "junk"]},
            [(1, -10, "USD")],
        ),
        (
            "cart.merged",
            {
                "merged": [
                    {"book_id": "1", "quantity": 5, "added_quantity": 2, "unit_price": usd(5)}
                ]
            },
            [(1, 10, "USD")],
        ),
        (
            "order.placed",
            {"order": {"lines": [{"book_id": "4", "quantity": 2, "line_total": usd(50)}]}},
            [(4, 50, "USD")],
        ),
        ("book.updated", {"book": {}}, []),
        ("cart.cleared", {"removed": "not a list"}, []),
    ]
    for kind, data, expected in cases:
        assert list(line_changes(stream_event(kind, data))) == expected, kind


def test_records_group_by_category_and_keep_the_events_time() -> None:
    cleared = stream_event(
        "cart.cleared",
        {
            "removed": [
                {"book_id": "1", "quantity": 1, "unit_price": usd(100)},
                {"book_id": "2", "quantity": 1, "unit_price": usd(200)},
                {"book_id": "3", "quantity": 1, "unit_price": usd(400)},
            ]
        },
    )
    records = cart_records(cleared, {1: "Fiction", 2: "Fiction"})
    assert [
        ({d["Name"]: d["Value"] for d in r["Dimensions"]}, r["MeasureValue"]) for r in records
    ] == [
        ({"EventType": "cart.cleared", "BookCategory": "Fiction", "Currency": "USD"}, "-300"),
        ({"EventType": "cart.cleared", "BookCategory": "unknown", "Currency": "USD"}, "-400"),
    ]
    assert len({r["Time"] for r in records}) == 1
    # The time is the event's millisecond; the offset below it is the id's alone.
    time_ns = record_time_ns(cleared)
    assert time_ns // 10**6 == int(AT.timestamp() * 1000)
    assert record_time_ns(cleared) == time_ns
    other = stream_event("cart.cleared", {}, event_id="e-2")
    assert record_time_ns(other) // 10**6 == time_ns // 10**6 and record_time_ns(other) != time_ns
    assert cart_records(stream_event("book.updated", {}), {}) == []


def test_lake_partitions_by_event_time_and_encodes_the_type() -> None:
    hour = datetime(2026, 3, 4, 5, tzinfo=UTC)
    assert partition_prefix("cart.item.added", hour) == (
        "raw/event_type=cart.item.added/date=2026-03-04/hour=05/"
    )
    assert partition_prefix("odd/type=x", hour).startswith("raw/event_type=odd%2Ftype%3Dx/")
    assert event_time(stream_event("x", {})) == AT
    without = StreamEvent({"id": "a", "type": "x"}, "s", "1", AT)
    assert event_time(without) == AT


def test_dedup_keeps_one_row_per_id_in_time_order() -> None:
    late = stream_event("x", {"n": 1}, event_id="b", sequence="9")
    early = StreamEvent(
        {**late.envelope, "id": "a", "occurred_at": "2026-03-04T05:00:00Z"}, "shardId-1", "2", AT
    )
    first = pa.Table.from_pylist([_row(late), _row(early)], schema=RAW_SCHEMA)
    replay = pa.Table.from_pylist([_row(late)], schema=RAW_SCHEMA)
    merged = deduplicated([first, replay])
    assert merged.column("id").to_pylist() == ["a", "b"]
    assert json.loads(merged.column("data")[1].as_py()) == {"n": 1}
    assert deduplicated([replay.slice(0, 0)]).num_rows == 0
