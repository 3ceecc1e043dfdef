"""Who may call each CartService and SessionService RPC (enforced by the runtime).

A cart is its owner's, and the owner is the caller: a signed-in shopper's cart is
addressed by their token, an anonymous visitor's by its session's credential in the
`x-session-credential` metadata, never by an id in the request. The cart RPCs are
therefore PUBLIC at this gate (an anonymous caller has no token) and check the owner
inside, in one place (services/cart/owners.py: `cart_owner`): neither token nor valid
credential is UNAUTHENTICATED there. Creating a session needs no sign-in; the RPCs that
name a session check inside that the caller holds it (its credential, or the user it is
bound to: `check_session_holder`). Binding a session, merging its cart and listing one's
sessions need a signed-in shopper.
"""

from __future__ import annotations

from cloudshelf.runtime.auth import PUBLIC, SHOPPER, Policy

CART_POLICY: Policy = {
    # The caller's own cart, a shopper's or an anonymous session's (owners.cart_owner).
    "GetCart": PUBLIC,
    "AddItem": PUBLIC,
    "UpdateItemQuantity": PUBLIC,
    "RemoveItem": PUBLIC,
    "ClearCart": PUBLIC,
    # Into the caller's own cart, from a session the caller holds.
    "MergeCarts": SHOPPER,
}

SESSION_POLICY: Policy = {
    "CreateSession": PUBLIC,
    # The session's credential or its bound user, checked inside (owners.check_session_holder).
    "GetSession": PUBLIC,
    "TouchSession": PUBLIC,
    "UpdatePreferences": PUBLIC,
    "DeleteSession": PUBLIC,
    # Binds a session to the caller; lists the caller's own sessions.
    "AuthenticateSession": SHOPPER,
    "ListUserSessions": SHOPPER,
}

POLICIES: dict[str, Policy] = {
    "cloudshelf.cart.v1.CartService": CART_POLICY,
    "cloudshelf.cart.v1.SessionService": SESSION_POLICY,
}
