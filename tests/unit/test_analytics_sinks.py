"""Pure logic of the analytics sinks and metrics: hours, keys, rounding, records, dedup."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.analytics.lake import (
    RAW_SCHEMA,
    Merged,
    _row,
    event_time,
    merge_files,
    partition_prefix,
)
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


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), path)
    return path


def test_merging_keeps_the_first_row_of_each_id_in_time_order(tmp_path: Path) -> None:
    late = stream_event("x", {"n": 1}, event_id="b", sequence="9")
    early = StreamEvent(
        {**late.envelope, "id": "a", "occurred_at": "2026-03-04T05:00:00Z"}, "shardId-1", "2", AT
    )
    timeless = StreamEvent({"id": "0", "type": "x"}, "shardId-1", "3", AT)
    changed = StreamEvent({**late.envelope, "data": {"n": 2}}, "shardId-1", "10", AT)
    first = _parquet(tmp_path / "1.parquet", [_row(late), _row(timeless), _row(early)])
    replay = _parquet(tmp_path / "2.parquet", [_row(changed), _row(early)])
    empty = _parquet(tmp_path / "3.parquet", [])
    merged = merge_files([first, replay, empty], tmp_path / "out.parquet", tmp_path)
    assert merged == Merged(rows_in=5, rows_out=3, buckets=1)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema == RAW_SCHEMA
    # By time, then id; no time last.
    assert table.column("id").to_pylist() == ["a", "b", "0"]
    # The first input's row of an id wins.
    assert json.loads(table.column("data")[1].as_py()) == {"n": 1}
    nothing = merge_files([empty], tmp_path / "none.parquet", tmp_path)
    assert nothing == Merged(0, 0, 1) and pq.read_table(tmp_path / "none.parquet").num_rows == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".arrow") == []


def _many_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rows of one hour, several per millisecond, ids in no order."""
    randomness = random.Random(seed)
    hour = datetime(2026, 3, 4, 5, tzinfo=UTC)
    return [
        {
            **_row(
                stream_event(
                    "x",
                    {"n": n},
                    event_id=f"{randomness.getrandbits(64):016x}",
                    sequence=str(n),
                )
            ),
            "occurred_at": hour + timedelta(milliseconds=randomness.randrange(3_600_000 // 50)),
        }
        for n in range(count)
    ]


def test_a_partition_larger_than_memory_merges_through_buckets(tmp_path: Path) -> None:
    rows = _many_rows(6000, seed=19)
    compacted_before = sorted(rows[:1000], key=lambda r: (r["occurred_at"], r["id"]))
    files = [_parquet(tmp_path / "compacted.parquet", compacted_before)]
    # Small files of the sink: the rest in batches, replays cut elsewhere (duplicates),
    # one replayed row with other content (the compacted row must win).
    for n, start in enumerate(range(1000, 6000, 700)):
        files.append(_parquet(tmp_path / f"small-{n}.parquet", rows[start : start + 700]))
    files.append(_parquet(tmp_path / "replay.parquet", rows[900:1300]))
    files.append(_parquet(tmp_path / "other.parquet", [{**rows[5], "data": '{"n": -1}'}]))

    merged = merge_files(files, tmp_path / "out.parquet", tmp_path, rows_in_memory=500)
    assert merged.rows_in == 6000 + 400 + 1 and merged.rows_out == 6000
    assert merged.buckets == 13  # ceil(6,401 / 500)
    out = pq.ParquetFile(tmp_path / "out.parquet")
    table = out.read()
    expected = sorted(rows, key=lambda r: (r["occurred_at"], r["id"]))
    assert table.column("id").to_pylist() == [r["id"] for r in expected]
    assert table.column("data").to_pylist() == [r["data"] for r in expected]
    # Row groups of at most half the memory's rows, all full but the last.
    sizes = [out.metadata.row_group(g).num_rows for g in range(out.metadata.num_row_groups)]
    assert max(sizes) == 250 and all(s == 250 for s in sizes[:-1])
    # Nothing left behind but the inputs and the output.
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".arrow"]


_PEAK = """
import sys
from pathlib import Path
import pyarrow as pa
from services.analytics.lake import merge_files
inputs = [Path(p) for p in sys.argv[3:]]
merge_files(inputs, Path(sys.argv[1]), Path(sys.argv[2]), rows_in_memory=5_000)
print(pa.default_memory_pool().max_memory())
"""


def _peak_memory_merging(tmp_path: Path, files: int) -> tuple[int, int]:
    """(the Arrow memory pool's peak while merging `files` files of 20,000 rows, 5,000
    rows at a time, in a process of its own; what those rows take in memory)."""
    paths, size = [], 0
    for n in range(files):
        table = pa.Table.from_pylist(_many_rows(20_000, seed=n), schema=RAW_SCHEMA)
        size += table.nbytes
        # Row groups as the sink's files have them (one consumer batch at most).
        pq.write_table(table, tmp_path / f"in-{n}.parquet", row_group_size=5_000)
        paths.append(str(tmp_path / f"in-{n}.parquet"))
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", _PEAK, str(tmp_path / "out.parquet"), str(work), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_rows == 20_000 * files
    return int(run.stdout.strip()), size


def test_merging_holds_a_bounded_number_of_rows_whatever_the_partitions_size(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    peak, _ = _peak_memory_merging(tmp_path / "a", files=3)
    double_peak, double_size = _peak_memory_merging(tmp_path / "b", files=6)
    # Twice the rows, not more memory; a small part of what the rows take.
    assert double_peak < peak * 1.25, (peak, double_peak)
    assert double_peak < double_size / 4, (double_peak, double_size)
