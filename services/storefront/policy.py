"""Who may call each StorefrontService RPC (enforced by the runtime)."""

from __future__ import annotations

from cloudshelf.runtime.auth import PUBLIC, SHOPPER, Policy

STOREFRONT_POLICY: Policy = {
    # The caller's own cart. Whose it is, and whether the caller may have one, is the cart
    # service's decision (a signed-in shopper's token, or an anonymous visitor's session
    # credential, both forwarded): the storefront lets through whatever the cart allows,
    # and passes the cart's UNAUTHENTICATED on when the caller sent neither.
    "GetCartView": PUBLIC,
    # Checkout of the caller's own cart; stock is reserved as the storefront itself.
    "PlaceOrder": SHOPPER,
    # The caller's own orders only (another user's is NOT_FOUND).
    "GetOrder": SHOPPER,
    "ListOrders": SHOPPER,
    "CancelOrder": SHOPPER,
}

POLICIES: dict[str, Policy] = {"cloudshelf.storefront.v1.StorefrontService": STOREFRONT_POLICY}
