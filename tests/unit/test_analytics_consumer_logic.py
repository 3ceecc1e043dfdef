"""The consumer's pure parts: lease planning and expiry, shard order after resharding, and
what the warehouse sink makes of events."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from services.analytics.leases import ExpiryClock, Lease, eligible_shards, plan_leases
from services.analytics.records import StreamEvent
from services.analytics.warehouse import price_range, rows_of

ARRIVAL = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def leases(**owners: str | None) -> list[Lease]:
    return [Lease(shard, owner, 5) for shard, owner in owners.items()]


def test_a_lone_worker_takes_every_free_lease() -> None:
    plan = plan_leases(leases(a=None, b=None, c=None), {"a", "b", "c"}, "me", set())
    assert sorted(lease.shard_id for lease in plan.take) == ["a", "b", "c"]
    assert plan.steal is None and plan.share == 3


def test_a_new_worker_takes_only_its_fair_share_of_free_leases() -> None:
    current = leases(a="other", b="other", c=None, d=None)
    plan = plan_leases(current, {"a", "b", "c", "d"}, "me", set())
    assert plan.share == 2
    assert sorted(lease.shard_id for lease in plan.take) == ["c", "d"]


def test_below_its_share_a_worker_steals_one_lease_from_the_busiest() -> None:
    current = leases(a="busy", b="busy", c="busy", d="calm")
    plan = plan_leases(current, {"a", "b", "c", "d"}, "me", set(), random.Random(1))
    assert plan.take == [] and plan.share == 2
    assert plan.steal is not None and plan.steal.owner == "busy"


def test_no_stealing_from_a_worker_at_its_share() -> None:
    current = leases(a="x", b="x", c="me")
    plan = plan_leases(current, {"a", "b", "c"}, "me", set())
    assert plan.share == 2 and plan.take == [] and plan.steal is None


def test_expired_leases_are_taken_and_their_owner_is_not_counted_alive() -> None:
    current = leases(a="dead", b="dead", c="me", d="me")
    plan = plan_leases(current, {"a", "b", "c", "d"}, "me", {"a", "b"})
    assert plan.share == 4
    assert sorted(lease.shard_id for lease in plan.take) == ["a", "b"]


def test_ineligible_shards_are_not_leased() -> None:
    plan = plan_leases(leases(parent=None, child=None), {"parent"}, "me", set())
    assert [lease.shard_id for lease in plan.take] == ["parent"]


def test_a_lease_expires_when_its_counter_stands_still_for_the_lease_period() -> None:
    clock = ExpiryClock(lease_seconds=10)
    assert clock.observe([Lease("a", "x", 1)], now=100.0) == set()  # first sight: alive
    assert clock.observe([Lease("a", "x", 1)], now=109.0) == set()
    assert clock.observe([Lease("a", "x", 1)], now=110.0) == {"a"}
    # Renewed: alive again, for another whole period.
    assert clock.observe([Lease("a", "x", 2)], now=111.0) == set()
    assert clock.observe([Lease("a", "x", 2)], now=120.0) == set()


def shard(shard_id: str, parent: str | None = None, adjacent: str | None = None) -> dict[str, Any]:
    described: dict[str, Any] = {"ShardId": shard_id}
    if parent:
        described["ParentShardId"] = parent
    if adjacent:
        described["AdjacentParentShardId"] = adjacent
    return described


def test_children_wait_for_every_parent_to_be_finished() -> None:
    shards = [shard("p1"), shard("p2"), shard("split", "p1"), shard("merged", "p1", "p2")]
    assert eligible_shards(shards, set()) == {"p1", "p2"}
    assert eligible_shards(shards, {"p1"}) == {"p2", "split"}
    assert eligible_shards(shards, {"p1", "p2"}) == {"split", "merged"}
    # A parent past the retention period is no longer listed: its children go ahead.
    assert eligible_shards([shard("child", "gone")], set()) == {"child"}


@pytest.mark.parametrize(
    ("minor", "band"),
    [(0, "low"), (999, "low"), (1000, "medium"), (2499, "medium"), (2500, "high")],
)
def test_price_bands(minor: int, band: str) -> None:
    assert price_range(minor) == band


def event(event_type: str, data: dict[str, Any], **envelope: Any) -> StreamEvent:
    return StreamEvent(
        {"id": "e-1", "type": event_type, "data": data, **envelope}, "shard-1", "1", ARRIVAL
    )


def test_an_interaction_becomes_one_fact_row() -> None:
    rows, rejected = rows_of(
        [
            event(
                "interaction.recorded",
                {
                    "interaction_id": "i-1",
                    "book_id": "42",
                    "type": "INTERACTION_TYPE_PURCHASE",
                    "value": {"minor_units": "1999", "currency_code": "eur"},
                },
            )
        ]
    )
    assert rejected == []
    (row,) = rows.interactions
    assert row[:2] == ("i-1", 42) and row[4] == "purchase"
    assert row[5] == ARRIVAL  # no time of its own: when it entered the stream
    assert row[6:8] == (1999, "EUR")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"book_id": "1"}, "type is unspecified"),
        ({"book_id": "0", "type": "INTERACTION_TYPE_VIEW"}, "book_id"),
        ({"book_id": "1", "type": "INTERACTION_TYPE_REVIEW", "rating": 9}, "rating"),
        ({"book_id": "1", "type": "INTERACTION_TYPE_VIEW", "user_id": "u" * 51}, "user_id"),
        ({"book_id": "x", "type": "INTERACTION_TYPE_VIEW"}, "not a"),
    ],
)
def test_interactions_the_warehouse_cannot_hold_are_rejected(
    data: dict[str, Any], reason: str
) -> None:
    rows, rejected = rows_of([event("interaction.recorded", data)])
    assert rows.empty()
    assert len(rejected) == 1 and reason in rejected[0].reason


def test_the_newest_book_version_of_a_batch_wins_and_unknown_types_are_ignored() -> None:
    def book(version: int, title: str) -> StreamEvent:
        return event(
            "book.updated",
            {"book_id": "7", "after": {"id": "7", "title": title, "price": {"minor_units": "500"}}},
            aggregate_version=str(version),
        )

    rows, rejected = rows_of([book(3, "three"), book(5, "five"), book(4, "four")])
    rows_ignored, _ = rows_of([event("inventory.adjusted", {"book_id": "7"})])
    assert rejected == [] and rows_ignored.empty()
    (row,) = rows.books.values()
    assert row[1] == "five" and row[5] == "low" and row[-1] == 5


def test_an_order_in_two_currencies_is_rejected() -> None:
    order = {
        "id": "o-1",
        "total": {"minor_units": "100", "currency_code": "USD"},
        "tax": {"minor_units": "10", "currency_code": "EUR"},
    }
    _, rejected = rows_of([event("order.placed", {"order": order})])
    assert len(rejected) == 1 and "currency" in rejected[0].reason


def test_an_interaction_in_json_names_with_nanoseconds_reads_the_same() -> None:
    rows, rejected = rows_of(
        [
            event(
                "interaction.recorded",
                {
                    "interactionId": "i-2",
                    "bookId": 42,
                    "type": 2,
                    "time": "2026-11-26T10:15:00.123456789Z",
                    "value": {"minorUnits": "250", "currencyCode": "USD"},
                    "pageViewDurationSeconds": "7",
                },
            )
        ]
    )
    assert rejected == []
    (row,) = rows.interactions
    assert row[:2] == ("i-2", 42) and row[4] == "add_to_cart"
    assert row[5] == datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
    assert (row[6], row[7], row[9]) == (250, "USD", 7)
