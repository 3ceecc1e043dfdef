"""Whose cart and whose session a call is about: the one place that reads and checks the
session credential (`x-session-credential` metadata, `<session_id>.<secret>`).

A signed-in caller (a verified token) owns the cart `user#<sub>`. Without a token, a valid
credential of a live session that is not bound to a user owns the cart `session#<id>`.
Once AuthenticateSession or MergeCarts binds a session to a user, its credential alone no
longer opens anything: the bound user's token does (so a credential planted before sign-in,
session fixation, is worthless after it). Secrets are compared as SHA-256 digests with
hmac.compare_digest; a credential is never logged or echoed in an error.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import Binary

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.runtime.auth import SESSION_CREDENTIAL, Principal, caller
from cloudshelf.runtime.errors import InvalidArgument, PermissionDenied, Unauthenticated
from cloudshelf.runtime.idempotency import current_principal
from cloudshelf.runtime.rpc import ServicerContext
from services.cart.sessions import SessionStore, secret_hash
from services.cart.store import SESSION_SIGNED_IN, session_owner_key, user_owner_key

# Ours are 22 characters (token_urlsafe of 16 bytes); anything else cannot exist.
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")

# ErrorInfo reasons.
SESSION_CREDENTIAL_MISSING = "SESSION_CREDENTIAL_MISSING"
SESSION_CREDENTIAL_INVALID = "SESSION_CREDENTIAL_INVALID"
NOT_SESSION_HOLDER = "NOT_SESSION_HOLDER"
SESSION_BOUND_TO_ANOTHER_USER = "SESSION_BOUND_TO_ANOTHER_USER"


@dataclass(frozen=True, repr=False)
class SessionCredential:
    """A presented credential, well-formed but not yet checked against the store."""

    session_id: str
    secret: str

    def __repr__(self) -> str:
        return f"SessionCredential({self.session_id}, <secret>)"

    def opens(self, item: dict[str, Any]) -> bool:
        """Whether this is the credential of the stored session `item`."""
        stored = item.get("secretHash")
        if isinstance(stored, Binary):
            stored = stored.value
        return (
            str(item.get("sessionId")) == self.session_id
            and isinstance(stored, bytes)
            and hmac.compare_digest(stored, secret_hash(self.secret))
        )


def session_id_field(value: str, field: str = "session_id") -> str:
    if not SESSION_ID.fullmatch(value):
        raise InvalidArgument(field, "must be a session id: 1..64 characters of A-Z a-z 0-9 _ -")
    return value


def _invalid(problem: str) -> Unauthenticated:
    return Unauthenticated(f"{SESSION_CREDENTIAL}: {problem}", reason=SESSION_CREDENTIAL_INVALID)


def presented_credential(context: ServicerContext) -> SessionCredential | None:
    """The call's session credential, well-formed; None when it sends none."""
    values = [
        value for key, value in context.invocation_metadata() or () if key == SESSION_CREDENTIAL
    ]
    if not values:
        return None
    if len(values) > 1:
        raise _invalid("send one credential, not several")
    value = values[0]
    session_id, dot, secret = value.partition(".") if isinstance(value, str) else ("", "", "")
    if not dot or not SESSION_ID.fullmatch(session_id) or not _SECRET.fullmatch(secret):
        raise _invalid("not a session credential: send the one CreateSession answered")
    return SessionCredential(session_id, secret)


def _missing() -> Unauthenticated:
    return Unauthenticated(
        f"this call needs a signed-in caller ('authorization: Bearer <access token>') or an "
        f"anonymous session's credential ('{SESSION_CREDENTIAL}: <credential>' from "
        "CreateSession)",
        reason=SESSION_CREDENTIAL_MISSING,
    )


def check_session_holder(
    item: dict[str, Any],
    credential: SessionCredential | None,
    principal: Principal | None,
) -> None:
    """Whether the caller may use the stored session `item`: its bound user, or, while it is
    bound to nobody, the holder of its credential. Raises otherwise."""
    session_id = str(item["sessionId"])
    bound_to = item.get("userId")
    if bound_to:
        if principal is not None and principal.subject == bound_to:
            return
        if principal is not None:
            raise PermissionDenied(
                f"session {session_id} is bound to another user",
                reason=NOT_SESSION_HOLDER,
                metadata={"session_id": session_id},
            )
        raise Unauthenticated(
            f"session {session_id} is bound to a signed-in user: send that user's token",
            reason=SESSION_SIGNED_IN,
            metadata={"session_id": session_id},
        )
    if credential is None:
        raise Unauthenticated(
            f"session {session_id} is anonymous: send its credential in '{SESSION_CREDENTIAL}'",
            reason=SESSION_CREDENTIAL_MISSING,
            metadata={"session_id": session_id},
        )
    if credential.session_id != session_id:
        raise PermissionDenied(
            f"the credential sent is not session {session_id}'s",
            reason=NOT_SESSION_HOLDER,
            metadata={"session_id": session_id},
        )
    if not credential.opens(item):
        raise _invalid(f"wrong secret for session {session_id}")


def require_some_credential(credential: SessionCredential | None) -> None:
    """Refuses, before any store is read, a call that sends neither token nor credential."""
    if credential is None and caller() is None:
        raise _missing()


@dataclass(frozen=True)
class CartOwnerKey:
    owner: cart_pb2.CartOwner
    # The cart's partition key: user#<sub> or session#<id>.
    key: str


async def cart_owner(context: ServicerContext, sessions: SessionStore) -> CartOwnerKey:
    """The cart the caller owns: a signed-in caller's (the token wins over a credential),
    else the anonymous session's whose credential the call carries. UNAUTHENTICATED
    otherwise. For a session, the idempotency scope becomes the session (request ids of
    two anonymous sessions never meet)."""
    principal = caller()
    if principal is not None:
        return CartOwnerKey(
            cart_pb2.CartOwner(user_id=principal.subject), user_owner_key(principal.subject)
        )
    credential = presented_credential(context)
    if credential is None:
        raise _missing()
    item = await sessions.read(credential.session_id)
    if item is None:
        raise _invalid("no live session has this credential (unknown or expired): create one")
    check_session_holder(item, credential, None)
    key = session_owner_key(credential.session_id)
    current_principal.set(key)
    return CartOwnerKey(cart_pb2.CartOwner(session_id=credential.session_id), key)
