"""The pure parts of the cart's stream processor: one stream record (old and new image of a
cart) to its events and book-holders index changes, event ids, the delivered prefix of a
batch, and which shards a worker may take."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from google.protobuf import json_format

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.runtime.events import DeliveryFailure
from services.cart.stream import (
    SHARD_END,
    HolderChange,
    delivered_prefix,
    eligible_shards,
    event_id,
    holder_expiry,
    owner_of,
    record_outcome,
)

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/Carts/stream/2026-11-26T00:00:00.000"
OWNER = "user#sub-1"
NOW = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)
STAMP = NOW.isoformat()
LIVE = int(NOW.timestamp()) + 90 * 86400
ROW_EXPIRY = holder_expiry(LIVE)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_serializer = TypeSerializer()


def line(book_id: int, quantity: int, price: int = 1999, **extra: Any) -> dict[str, Any]:
    return {"bookId": book_id, "title": f"Book {book_id}", "priceMinor": price,
            "quantity": quantity, "addedAt": STAMP, **extra}  # fmt: skip


def cart(*lines: dict[str, Any], version: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "userId": OWNER,
        "cartId": "current",
        "currency": "USD",
        "items": {str(item["bookId"]): item for item in lines},
        "lineCount": len(lines),
        "version": version,
        "lastModified": STAMP,
        "expiresAt": LIVE,
        "traceparent": TRACEPARENT,
        "tracestate": "",
        "lastOperation": "AddItem",
        **extra,
    }


def record(
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    sequence: str = "100",
    owner: str = OWNER,
) -> dict[str, Any]:
    change: dict[str, Any] = {
        "SequenceNumber": sequence,
        "ApproximateCreationDateTime": NOW,
        "Keys": {"userId": {"S": owner}, "cartId": {"S": "current"}},
    }
    if old is not None:
        change["OldImage"] = {k: _serializer.serialize(v) for k, v in old.items()}
    if new is not None:
        change["NewImage"] = {k: _serializer.serialize(v) for k, v in new.items()}
    name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
    return {"eventName": name, "dynamodb": change}


def kinds(outcome: Any) -> list[tuple[str, str]]:
    return [(event.type, event.subject) for event in outcome.events]


def test_a_new_cart_adds_its_line_and_indexes_it() -> None:
    outcome = record_outcome(record(None, cart(line(7, 2))), ARN, 5)
    assert kinds(outcome) == [("cart.item.added", OWNER)]
    event = outcome.events[0]
    data = json_format.ParseDict(dict(event.data), cart_pb2.CartItemAddedEvent())
    assert data.owner.user_id == "sub-1"
    assert (data.book_id, data.quantity, data.unit_price.minor_units) == (7, 2, 1999)
    assert data.unit_price.currency_code == "USD"
    assert event.data_type == "cloudshelf.cart.v1.CartItemAddedEvent"
    assert event.aggregate_version == 1
    assert event.traceparent == TRACEPARENT and event.tracestate is None
    assert event.occurred_at == NOW
    assert outcome.holders == [HolderChange(7, OWNER, ROW_EXPIRY)]
    assert outcome.sequence_number == "100"


def test_line_diffs_give_added_updated_removed_and_keep_unchanged_lines_quiet() -> None:
    old = cart(line(1, 1), line(2, 3), line(3, 1), version=4)
    new = cart(line(1, 1), line(2, 5), line(4, 1), version=5)
    outcome = record_outcome(record(old, new), ARN, 5)
    assert [(e.type, e.data["book_id"]) for e in outcome.events] == [
        ("cart.item.updated", "2"),
        ("cart.item.removed", "3"),
        ("cart.item.added", "4"),
    ]
    updated = json_format.ParseDict(dict(outcome.events[0].data), cart_pb2.CartItemUpdatedEvent())
    assert (updated.quantity, updated.previous_quantity) == (5, 3)
    removed = json_format.ParseDict(dict(outcome.events[1].data), cart_pb2.CartItemRemovedEvent())
    assert removed.previous_quantity == 1
    assert all(e.aggregate_version == 5 for e in outcome.events)
    # The expiry stayed within its day: only the changed lines' rows are written.
    assert sorted(outcome.holders, key=lambda h: h.book_id) == [
        HolderChange(2, OWNER, ROW_EXPIRY),
        HolderChange(3, OWNER, None),
        HolderChange(4, OWNER, ROW_EXPIRY),
    ]


def test_index_rows_never_expire_before_their_cart() -> None:
    assert ROW_EXPIRY >= LIVE and ROW_EXPIRY - LIVE < 86400 and ROW_EXPIRY % 86400 == 0
    assert holder_expiry(ROW_EXPIRY) == ROW_EXPIRY
    # A write a day later moves the cart's expiry to a later day: every row is rewritten.
    old = cart(line(1, 1), line(2, 3), version=4)
    new = {**cart(line(1, 1), line(2, 4), version=5), "expiresAt": LIVE + 86400}
    outcome = record_outcome(record(old, new), ARN, 5)
    assert outcome.holders == [
        HolderChange(1, OWNER, ROW_EXPIRY + 86400),
        HolderChange(2, OWNER, ROW_EXPIRY + 86400),
    ]


def test_clear_cart_is_one_cleared_event_and_removing_the_last_line_is_not() -> None:
    old = cart(line(1, 2), line(2, 1), version=3)
    cleared = record_outcome(record(old, cart(version=4, lastOperation="ClearCart")), ARN, 5)
    assert kinds(cleared) == [("cart.cleared", OWNER)]
    data = json_format.ParseDict(dict(cleared.events[0].data), cart_pb2.CartClearedEvent())
    assert [(x.book_id, x.quantity) for x in data.removed] == [(1, 2), (2, 1)]
    assert {h.expires_at for h in cleared.holders} == {None}

    last = record_outcome(
        record(cart(line(1, 2)), cart(version=2, lastOperation="RemoveItem")), ARN, 5
    )
    assert kinds(last) == [("cart.item.removed", OWNER)]


def test_a_merge_is_one_merged_event_naming_the_session() -> None:
    old = cart(line(1, 2), version=3)
    merge = {"sessionId": "s-9", "requestId": "r-1"}
    new = cart(line(1, 5), line(2, 1), line(3, 4), version=4, lastMerge=merge)
    old_with_third = {**old, "items": {**old["items"], "3": line(3, 4)}}
    outcome = record_outcome(record(old_with_third, new), ARN, 5)
    assert kinds(outcome) == [("cart.merged", OWNER)]
    data = json_format.ParseDict(dict(outcome.events[0].data), cart_pb2.CartMergedEvent())
    assert data.from_session_id == "s-9"
    assert [(x.book_id, x.quantity, x.added_quantity) for x in data.merged] == [
        (1, 5, 3),
        (2, 1, 1),
    ]
    # The same lastMerge again (a later write of the user's cart) is no merge.
    later = record_outcome(record(new, {**new, "items": {"1": line(1, 6)}, "version": 5}), ARN, 5)
    assert [e.type for e in later.events] == [
        "cart.item.updated",
        "cart.item.removed",
        "cart.item.removed",
    ]


def test_remove_records_publish_nothing_and_drop_the_index_rows() -> None:
    ttl_delete = record(cart(line(1, 1), line(2, 2)), None)
    ttl_delete["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    outcome = record_outcome(ttl_delete, ARN, 5)
    assert outcome.events == []
    assert outcome.holders == [HolderChange(1, OWNER, None), HolderChange(2, OWNER, None)]
    session = record_outcome(record(cart(line(3, 1)), None, owner="session#abc"), ARN, 5)
    assert session.events == []
    assert session.holders == [HolderChange(3, "session#abc", None)]
    # Nor does a merged session's tombstone in place of its cart (cart.merged says it).
    tombstone = {"mergedInto": OWNER, "version": 2, "expiresAt": int(NOW.timestamp()) + 60}
    merged = record_outcome(record(cart(line(3, 1)), tombstone, owner="session#abc"), ARN, 5)
    assert merged.events == []
    assert merged.holders == [HolderChange(3, "session#abc", None)]


def test_lines_of_an_expired_cart_are_not_removed_by_the_next_write() -> None:
    expired = {**cart(line(1, 1), line(2, 1)), "expiresAt": int(NOW.timestamp()) - 1}
    outcome = record_outcome(record(expired, cart(line(3, 1), version=9)), ARN, 5)
    assert kinds(outcome) == [("cart.item.added", OWNER)]
    # ...but their index rows go.
    assert HolderChange(1, OWNER, None) in outcome.holders


def test_inventory_low_for_checked_lines_leaving_little_stock() -> None:
    # 7 of 10 in stock: 3 left, under 5.
    outcome = record_outcome(record(None, cart(line(7, 7, stockSeen=10))), ARN, 5)
    assert kinds(outcome) == [("cart.item.added", OWNER), ("inventory.low", "7")]
    low = outcome.events[1]
    assert low.aggregate_version == 0
    data = json_format.ParseDict(dict(low.data), cart_pb2.InventoryLowEvent())
    assert (data.book_id, data.stock_quantity, data.threshold, data.cart_quantity) == (7, 10, 5, 7)
    # 7 of 12: 5 left, not under 5. 3 of 4: a line of 5 or fewer copies is never checked.
    assert kinds(record_outcome(record(None, cart(line(7, 7, stockSeen=12))), ARN, 5)) == [
        ("cart.item.added", OWNER)
    ]
    assert kinds(record_outcome(record(None, cart(line(7, 3, stockSeen=4))), ARN, 5)) == [
        ("cart.item.added", OWNER)
    ]
    # An unchanged line says nothing again; an update to 8 of 10 does.
    old = cart(line(7, 7, stockSeen=10), line(8, 1))
    same = record_outcome(record(old, cart(line(7, 7, stockSeen=10), line(8, 2))), ARN, 5)
    assert [e.type for e in same.events] == ["cart.item.updated"]
    more = record_outcome(record(old, cart(line(7, 8, stockSeen=10), line(8, 1))), ARN, 3)
    assert [e.type for e in more.events] == ["cart.item.updated", "inventory.low"]


def test_event_ids_are_derived_from_the_record() -> None:
    rec = record(cart(line(1, 1)), cart(line(1, 2), line(2, 1), version=2), sequence="555")
    first = record_outcome(rec, ARN, 5)
    again = record_outcome(rec, ARN, 5)
    assert [e.id for e in first.events] == [e.id for e in again.events]
    assert len({e.id for e in first.events}) == 2
    assert first.events[0].id == event_id(ARN, "555", "cart.item.updated", 1)
    other = record_outcome(
        {**rec, "dynamodb": {**rec["dynamodb"], "SequenceNumber": "556"}}, ARN, 5
    )
    assert not {e.id for e in other.events} & {e.id for e in first.events}


def test_owner_keys() -> None:
    assert owner_of("user#abc") == cart_pb2.CartOwner(user_id="abc")
    assert owner_of("session#s1") == cart_pb2.CartOwner(session_id="s1")
    assert owner_of("other") is None
    assert record_outcome(record(None, cart(line(1, 1)), owner="x"), ARN, 5).events == []


def test_delivered_prefix_stops_at_the_first_retryable_failure() -> None:
    rec_a = record_outcome(record(None, cart(line(1, 1)), sequence="1"), ARN, 5)
    rec_b = record_outcome(
        record(cart(line(1, 1)), cart(line(1, 1), version=2), sequence="2"), ARN, 5
    )
    rec_c = record_outcome(record(None, cart(line(2, 1), line(3, 1)), sequence="3"), ARN, 5)
    outcomes = [rec_a, rec_b, rec_c]
    throttled = DeliveryFailure("ThrottlingException", "slow down", retryable=True)
    invalid = DeliveryFailure("ValidationException", "bad", retryable=False)
    assert delivered_prefix(outcomes, [None, None, None]) == ("3", False)
    assert delivered_prefix(outcomes, [None, None, throttled]) == ("2", True)
    assert delivered_prefix(outcomes, [throttled, None, None]) == (None, True)
    # An event the bus refuses as invalid cannot hold its shard back.
    assert delivered_prefix(outcomes, [invalid, None, None]) == ("3", False)


def test_eligible_shards_follow_parents_and_leases() -> None:
    now = 1000.0
    rows: list[dict[str, Any]] = [
        {"shardId": "a", "checkpoint": SHARD_END},
        {"shardId": "b", "parentShardId": "a"},  # parent done
        {"shardId": "c", "parentShardId": "b"},  # parent still open
        {"shardId": "d", "parentShardId": "gone"},  # parent trimmed away
        {"shardId": "e", "leaseOwner": "other", "leaseExpiresAt": now + 5},
        {"shardId": "f", "leaseOwner": "other", "leaseExpiresAt": now - 1},  # expired
        {"shardId": "g", "leaseOwner": "me", "leaseExpiresAt": now + 5},
    ]
    assert eligible_shards(rows, now, "me") == ["b", "d", "f", "g"]
