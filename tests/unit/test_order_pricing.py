"""Pure parts of checkout: the tax and shipping rule stated in storefront.proto, and the
ids derived from a PlaceOrder request_id."""

from __future__ import annotations

import uuid

import pytest

from cloudshelf.runtime.errors import InvalidArgument
from services.storefront.orders import (
    PricingRules,
    cancel_request_id,
    check_order_id,
    clear_cart_request_id,
    order_id_for,
    order_totals,
    release_request_id,
    reservation_request_id,
)

RULES = PricingRules(tax_rate_basis_points=800, free_shipping_from=3500, shipping_flat=499)


def test_tax_is_rounded_half_up_to_a_minor_unit() -> None:
    # 8 % of 1006 is 80.48 -> 80; of 1019 is 81.52 -> 82; of 1025 is 82.00; of 1031 is
    # 82.48 -> 82.
    assert [order_totals([amount], RULES).tax for amount in (1006, 1019, 1025, 1031)] == [
        80,
        82,
        82,
        82,
    ]
    assert order_totals([1000, 6, 0], RULES).subtotal == 1006
    # Exactly half a minor unit rounds up: 1 % of 50 is 0.5 -> 1.
    assert order_totals([50], PricingRules(100, 0, 0)).tax == 1


def test_shipping_is_free_from_the_threshold_else_flat() -> None:
    below, at = order_totals([3499], RULES), order_totals([3500], RULES)
    assert below.shipping == 499 and at.shipping == 0
    assert below.total == 3499 + below.tax + 499
    assert at.total == 3500 + 280
    assert order_totals([1999, 1999], RULES).discount == 0


def test_negative_rules_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSHELF_STOREFRONT_SHIPPING_FLAT_MINOR_UNITS", "-1")
    with pytest.raises(ValueError, match="negative"):
        PricingRules.from_env()
    monkeypatch.setenv("CLOUDSHELF_STOREFRONT_SHIPPING_FLAT_MINOR_UNITS", "0")
    monkeypatch.setenv("CLOUDSHELF_STOREFRONT_TAX_RATE_BASIS_POINTS", "1000")
    assert PricingRules.from_env().tax_rate_basis_points == 1000


def test_derived_ids_are_stable_and_distinct() -> None:
    key = uuid.uuid4()
    order = order_id_for("user-a", key)
    assert order == order_id_for("user-a", key)
    # Another user sending the same UUID places another order.
    assert order != order_id_for("user-b", key)
    derived = {
        reservation_request_id(order, 0),
        reservation_request_id(order, 1),
        release_request_id(order, 0),
        cancel_request_id(order),
        clear_cart_request_id(order),
        order,
    }
    assert len(derived) == 6
    assert reservation_request_id(order, 1) == reservation_request_id(order, 1)


@pytest.mark.parametrize("text", ["", "x", "0" * 32, "{" + str(uuid.uuid4()) + "}"])
def test_order_ids_are_canonical_uuids(text: str) -> None:
    with pytest.raises(InvalidArgument):
        check_order_id("order_id", text)
    assert str(check_order_id("order_id", str(uuid.UUID(int=7)))) == str(uuid.UUID(int=7))
