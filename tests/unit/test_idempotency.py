"""Idempotency keys: the canonical request hash, the request_id format, the caller scope."""

from __future__ import annotations

import uuid

import pytest

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.idempotency import (
    IdempotentCall,
    caller_scope,
    check_request_id,
    current_principal,
    request_hash,
)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _field(number, 0, _varint(value & (2**64 - 1)))


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, 2, _varint(len(value)) + value)


def adjust(*changes: tuple[int, int, bool], request_id: str = "") -> pb.AdjustInventoryRequest:
    return pb.AdjustInventoryRequest(
        adjustments=[
            pb.InventoryAdjustment(book_id=b, delta=d, is_purchase=p) for b, d, p in changes
        ],
        request_id=request_id,
    )


def test_field_order_on_the_wire_and_unknown_fields_do_not_change_the_hash() -> None:
    request = adjust((7, -2, True), (9, 5, False), request_id=str(uuid.uuid4()))
    # The same request written by another encoder: fields in reverse number order, the key
    # first, and fields this server does not know (a newer client) at both levels.
    first = _varint_field(3, 1) + _varint_field(2, -2) + _varint_field(1, 7) + _varint_field(99, 4)
    second = _varint_field(2, 5) + _varint_field(1, 9)
    wire = (
        _bytes_field(2, request.request_id.encode())
        + _bytes_field(77, b"from a newer schema")
        + _bytes_field(1, first)
        + _bytes_field(1, second)
    )
    assert wire != request.SerializeToString()
    reordered = pb.AdjustInventoryRequest.FromString(wire)
    known = pb.AdjustInventoryRequest()
    known.CopyFrom(reordered)
    known.DiscardUnknownFields()
    assert known == request
    assert request_hash(reordered) == request_hash(request)
    # Hashing does not touch the request itself: its key and unknown fields are still there.
    assert reordered.request_id == request.request_id
    assert b"from a newer schema" in reordered.SerializeToString()


def test_the_key_itself_is_not_part_of_the_hash() -> None:
    one = adjust((7, -2, True), request_id=str(uuid.uuid4()))
    other = adjust((7, -2, True), request_id=str(uuid.uuid4()))
    assert request_hash(one) == request_hash(other) == request_hash(adjust((7, -2, True)))


@pytest.mark.parametrize(
    "different",
    [
        adjust((7, -3, True)),  # another delta
        adjust((8, -2, True)),  # another book
        adjust((7, -2, False)),  # not a purchase
        adjust((7, -2, True), (9, 1, False)),  # one more adjustment
        adjust(),  # nothing
    ],
)
def test_a_different_request_has_a_different_hash(different: pb.AdjustInventoryRequest) -> None:
    assert request_hash(different) != request_hash(adjust((7, -2, True)))


def test_the_order_of_repeated_items_is_part_of_the_request() -> None:
    # Conservative: a retry repeats the request exactly; reordering is a new request.
    assert request_hash(adjust((7, 1, False), (9, 1, False))) != request_hash(
        adjust((9, 1, False), (7, 1, False))
    )


def test_the_message_type_is_part_of_the_hash() -> None:
    # Both empty: identical (empty) bytes, still two different requests.
    assert request_hash(pb.AdjustInventoryRequest()) != request_hash(
        pb.RecordViewRequest(), key_field="book_id"
    )


def test_request_ids_are_uuids_in_their_canonical_text() -> None:
    key = uuid.uuid4()
    assert check_request_id("request_id", "") is None
    assert check_request_id("request_id", str(key)) == key
    assert check_request_id("request_id", str(key).upper()) == key  # same key in any case
    assert check_request_id("request_id", "01890a5d-ac96-774b-bcce-b302099a8057") is not None


@pytest.mark.parametrize(
    "value",
    [
        "req-1",
        "order-2024-0001",
        "x" * 36,
        "0" * 32,  # hex without hyphens
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        " 12345678-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-567812345678\n",
        "12345678-1234-5678-1234-56781234567\x00",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="request_id"):
        check_request_id("request_id", value)


def test_keys_are_scoped_by_rpc_and_by_principal_once_there_is_one() -> None:
    rpc = "/cloudshelf.catalog.v1.CatalogService/AdjustInventory"
    request = adjust((7, 1, False), request_id=str(uuid.uuid4()))
    anonymous = IdempotentCall.of(rpc, request)
    assert anonymous is not None and anonymous.caller == rpc == caller_scope(rpc)
    token = current_principal.set("user-123")
    try:
        signed_in = IdempotentCall.of(rpc, request)
    finally:
        current_principal.reset(token)
    assert signed_in is not None and signed_in.caller == f"{rpc} user-123"
    assert signed_in.key == anonymous.key and signed_in.request_hash == anonymous.request_hash
    assert IdempotentCall.of(rpc, adjust((7, 1, False))) is None
