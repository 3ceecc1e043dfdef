"""Who may call each CartService and SessionService RPC (enforced by the runtime).

A cart is its owner's, and the owner is the caller: a signed-in shopper's cart is
addressed by their token, never by an id in the request. Anonymous visitors will be
addressed by a server-issued session credential in metadata, defined by the cart issue;
until then the cart RPCs are for signed-in shoppers only. A session is addressed by its
unguessable, server-issued id; creating one needs no sign-in.
"""

from __future__ import annotations

from cloudshelf.runtime.auth import PUBLIC, SHOPPER, Policy

CART_POLICY: Policy = {
    "GetCart": SHOPPER,
    "AddItem": SHOPPER,
    "UpdateItemQuantity": SHOPPER,
    "RemoveItem": SHOPPER,
    "ClearCart": SHOPPER,
    # Into the caller's own cart, from a session the caller holds.
    "MergeCarts": SHOPPER,
}

SESSION_POLICY: Policy = {
    "CreateSession": PUBLIC,
    "GetSession": PUBLIC,
    "TouchSession": PUBLIC,
    "UpdatePreferences": PUBLIC,
    "DeleteSession": PUBLIC,
    # Binds a session to the caller; lists the caller's own sessions.
    "AuthenticateSession": SHOPPER,
    "ListUserSessions": SHOPPER,
}

# The caller's own notifications, with the same owners as the carts they are about.
NOTIFICATION_POLICY: Policy = {
    "ListNotifications": SHOPPER,
    "MarkNotificationsRead": SHOPPER,
}

POLICIES: dict[str, Policy] = {
    "cloudshelf.cart.v1.CartService": CART_POLICY,
    "cloudshelf.cart.v1.SessionService": SESSION_POLICY,
    "cloudshelf.cart.v1.NotificationService": NOTIFICATION_POLICY,
}
