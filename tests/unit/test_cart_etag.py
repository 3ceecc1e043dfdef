"""The cart's AIP-154 etag, derived from its stored item."""

from __future__ import annotations

import time
from typing import Any

from cloudshelf.cart.v1 import cart_pb2
from services.cart.store import cart_etag, cart_from_item

OWNER = cart_pb2.CartOwner(user_id="u1")


def _item(version: int, modified: str, *, expires_in: int = 3600) -> dict[str, Any]:
    return {
        "userId": "u1",
        "cartId": "current",
        "version": version,
        "lastModified": modified,
        "expiresAt": int(time.time()) + expires_in,
        "items": {},
    }


def test_the_etag_is_stable_for_one_state_and_changes_with_every_write() -> None:
    first = _item(3, "2026-11-20T10:00:00+00:00")
    assert cart_etag(first) == cart_etag(dict(first))
    assert cart_etag(first) != cart_etag(_item(4, "2026-11-20T10:00:05+00:00"))


def test_a_new_cart_counting_from_1_again_does_not_match_an_old_etag() -> None:
    # An expired cart deleted, then a new one: the same version, another write time.
    old = _item(1, "2026-10-01T09:00:00+00:00")
    new = _item(1, "2026-11-20T10:00:00+00:00")
    assert cart_etag(old) != cart_etag(new)


def test_no_cart_has_an_etag_too_and_it_is_not_a_stored_carts() -> None:
    absent = cart_from_item(OWNER, None)
    assert absent.etag  # empty would mean "no precondition"
    assert absent.etag == cart_etag(None)
    assert absent.etag != cart_from_item(OWNER, _item(1, "2026-11-20T10:00:00+00:00")).etag


def test_an_expired_cart_reads_as_no_cart() -> None:
    expired = _item(7, "2026-11-20T10:00:00+00:00", expires_in=-1)
    assert cart_from_item(OWNER, expired).etag == cart_etag(None)
    live = _item(7, "2026-11-20T10:00:00+00:00")
    assert cart_from_item(OWNER, live).etag == cart_etag(live)
