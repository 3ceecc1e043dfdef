"""Cart items in DynamoDB, converted to and from the cart protos."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.errors import InvalidArgument
from services.cart.tables import CURRENT_CART, SESSION_OWNER_PREFIX

DEFAULT_CURRENCY = "USD"


def owner_key(owner: cart_pb2.CartOwner) -> str:
    """The cart's partition key; INVALID_ARGUMENT when the owner is missing."""
    which = owner.WhichOneof("owner")
    if which == "user_id" and owner.user_id.strip():
        return owner.user_id.strip()
    if which == "session_id" and owner.session_id.strip():
        return SESSION_OWNER_PREFIX + owner.session_id.strip()
    raise InvalidArgument("owner", "set user_id or session_id")


def _timestamp(iso: str | None) -> Timestamp | None:
    if not iso:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def cart_etag(item: dict[str, Any] | None) -> str:
    """The AIP-154 etag of a stored cart item (None: no cart, or an expired one).

    Derived from the item's `version`, which every write increases, and its `lastModified`:
    the version alone would repeat once an expired cart is deleted and a new one counts
    from 1 again, and an etag kept from the old cart would then match. Never empty, also
    for no cart: a write that passes the empty cart's etag succeeds only while there is
    still no cart (an empty etag means no precondition at all).
    """
    version = int(item.get("version", 0)) if item is not None else 0
    modified = str(item.get("lastModified", "")) if item is not None else ""
    digest = hashlib.sha256(f"{version}|{modified}".encode()).hexdigest()
    return f'W/"{digest[:20]}"'


def cart_from_item(owner: cart_pb2.CartOwner, item: dict[str, Any] | None) -> cart_pb2.Cart:
    """The stored cart, or an empty one when there is none or it has expired."""
    if item is None or int(item.get("expiresAt", 0)) <= int(time.time()):
        return cart_pb2.Cart(
            owner=owner,
            total_amount=common_pb2.Money(currency_code=DEFAULT_CURRENCY),
            etag=cart_etag(None),
        )
    currency = str(item.get("currency", DEFAULT_CURRENCY))
    cart = cart_pb2.Cart(
        owner=owner,
        total_items=int(item.get("totalItems", 0)),
        total_amount=common_pb2.Money(
            minor_units=int(item.get("totalAmountMinor", 0)), currency_code=currency
        ),
        etag=cart_etag(item),
    )
    for stored in item.get("items", []):
        line = cart.items.add(
            book_id=int(stored["bookId"]),
            title=str(stored.get("title", "")),
            unit_price=common_pb2.Money(
                minor_units=int(stored["priceMinor"]), currency_code=currency
            ),
            quantity=int(stored["quantity"]),
        )
        added = _timestamp(stored.get("addedAt"))
        if added is not None:
            line.add_time.CopyFrom(added)
    updated = _timestamp(item.get("lastModified"))
    if updated is not None:
        cart.update_time.CopyFrom(updated)
    cart.expire_time.FromDatetime(datetime.fromtimestamp(int(item["expiresAt"]), UTC))
    return cart


class CartStore:
    def __init__(self, table: Any) -> None:
        self.table = table

    async def get(self, owner: cart_pb2.CartOwner) -> cart_pb2.Cart:
        response = await self.table.get_item(
            Key={"userId": owner_key(owner), "cartId": CURRENT_CART}, ConsistentRead=True
        )
        return cart_from_item(owner, response.get("Item"))
