"""Who may call each StorefrontService RPC (enforced by the runtime)."""

from __future__ import annotations

from cloudshelf.runtime.auth import SHOPPER, Policy

STOREFRONT_POLICY: Policy = {
    # The caller's own cart; the caller's token is forwarded to the cart service.
    "GetCartView": SHOPPER,
}

POLICIES: dict[str, Policy] = {"cloudshelf.storefront.v1.StorefrontService": STOREFRONT_POLICY}
