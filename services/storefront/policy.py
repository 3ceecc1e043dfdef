"""Who may call each StorefrontService RPC (enforced by the runtime)."""

from __future__ import annotations

from cloudshelf.runtime.auth import SHOPPER, Policy

STOREFRONT_POLICY: Policy = {
    # The caller's own cart; the caller's token is forwarded to the cart service.
    "GetCartView": SHOPPER,
    # Checkout of the caller's own cart; stock is reserved as the storefront itself.
    "PlaceOrder": SHOPPER,
    # The caller's own orders only (another user's is NOT_FOUND).
    "GetOrder": SHOPPER,
    "ListOrders": SHOPPER,
    "CancelOrder": SHOPPER,
}

POLICIES: dict[str, Policy] = {"cloudshelf.storefront.v1.StorefrontService": STOREFRONT_POLICY}
