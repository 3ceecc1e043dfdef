"""Sessions and anonymous carts through gRPC (issue 17, items 2, 7, 8): the session
credential, every SessionService RPC and its errors, AuthenticateSession and MergeCarts
(summed and capped, one transaction, idempotent, no session fixation), ListUserSessions,
TTL-expired sessions, the bounded activity log, and what is kept of the client's address."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import grpc
import pytest

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.devstack.stack import Stack
from tests.conftest import ChannelTo, NewUser, User
from tests.error_details import details_of_error
from tests.factories import book, usd

CREDENTIAL = "x-session-credential"
Code = grpc.StatusCode


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynamodb(stack: Stack) -> Iterator[Any]:
    """The emulator's DynamoDB, to look at what is stored and to set up expired items."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=stack.aws.url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def tables(stack: Stack) -> tuple[str, str]:
    settings = stack.settings("cart")
    return settings.cart_table, settings.sessions_table


def _sessions(channel_to: ChannelTo, token: str | None = None) -> Any:
    return cart_pb2_grpc.SessionServiceStub(channel_to("cart", token))


def _carts(channel_to: ChannelTo, token: str | None = None) -> Any:
    return cart_pb2_grpc.CartServiceStub(channel_to("cart", token))


def _holding(credential: str) -> tuple[tuple[str, str]]:
    return ((CREDENTIAL, credential),)


async def _refused(call: Any) -> str:
    """'CODE REASON' of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        info = details_of_error(exc).error_info
        assert info is not None, exc.details()
        return f"{exc.code().name} {info.reason}"
    raise AssertionError("the call succeeded")


async def _new_session(channel_to: ChannelTo, **preferences: str) -> tuple[cart_pb2.Session, str]:
    answer = await _sessions(channel_to, None).CreateSession(
        cart_pb2.CreateSessionRequest(preferences=cart_pb2.Preferences(**preferences)),
        timeout=10,
    )
    return answer.session, answer.session_credential


async def _book(catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, price: int = 1000) -> int:
    request = catalog_pb2.CreateBookRequest(book=book(price=usd(price)))
    created = (await catalog.CreateBook(request, timeout=10)).book
    # Lines above 5 copies are checked against stock: give plenty.
    adjustment = catalog_pb2.InventoryAdjustment(book_id=created.id, delta=500)
    await catalog.AdjustInventory(
        catalog_pb2.AdjustInventoryRequest(adjustments=[adjustment]), timeout=10
    )
    return created.id


def _quantities(cart: cart_pb2.Cart) -> dict[int, int]:
    return {line.book_id: line.quantity for line in cart.items}


def _cart_item(dynamodb: Any, table: str, key: str) -> dict[str, Any] | None:
    answer = dynamodb.get_item(
        TableName=table,
        Key={"userId": {"S": key}, "cartId": {"S": "current"}},
        ConsistentRead=True,
    )
    item: dict[str, Any] | None = answer.get("Item")
    return item


def _expire_session(dynamodb: Any, table: str, session_id: str) -> None:
    """As if the TTL had passed and DynamoDB had not deleted the item yet."""
    dynamodb.update_item(
        TableName=table,
        Key={"sessionId": {"S": session_id}},
        UpdateExpression="SET expiresAt = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}},
    )


# --- the credential --------------------------------------------------------------------


async def test_create_session_shows_the_credential_once_and_stores_only_its_hash(
    channel_to: ChannelTo, dynamodb: Any, tables: tuple[str, str]
) -> None:
    session, credential = await _new_session(channel_to, currency_code="EUR", theme="dark")
    session_id, _, secret = credential.partition(".")
    assert session_id == session.session_id and len(session_id) >= 22
    assert len(secret) >= 43  # 256 random bits, URL-safe base64
    other, _ = await _new_session(channel_to)
    assert other.session_id != session.session_id
    assert not session.user_id and not session.is_authenticated
    assert session.preferences == cart_pb2.Preferences(currency_code="EUR", theme="dark")
    assert session.expire_time.seconds - session.create_time.seconds == 30 * 86400

    # Stored: the secret's SHA-256, never the secret or the credential.
    raw = dynamodb.get_item(TableName=tables[1], Key={"sessionId": {"S": session_id}})["Item"]
    assert raw["secretHash"]["B"] == hashlib.sha256(secret.encode()).digest()
    assert secret not in json.dumps(raw, default=repr)

    # Confidential metadata: the client's network, not its address; the user agent.
    assert session.ip_address == "127.0.0.0/24"
    assert raw["ipAddress"]["S"] == "127.0.0.0/24"
    assert "grpc" in session.user_agent

    # The credential opens the session; GetSession answers it without the credential.
    sessions = _sessions(channel_to, None)
    got = (
        await sessions.GetSession(
            cart_pb2.GetSessionRequest(session_id=session_id),
            metadata=_holding(credential),
            timeout=5,
        )
    ).session
    assert got == session

    # A retried CreateSession (same request_id) answers the same session, without it.
    request = cart_pb2.CreateSessionRequest(request_id=str(uuid.uuid4()))
    first = await sessions.CreateSession(request, timeout=10)
    again = await sessions.CreateSession(request, timeout=10)
    assert first.session_credential and not again.session_credential
    assert again.session == first.session


async def test_a_session_is_refused_without_its_credential(
    channel_to: ChannelTo, new_user: NewUser
) -> None:
    session, credential = await _new_session(channel_to)
    other_session, other_credential = await _new_session(channel_to)
    session_id = session.session_id
    wrong = f"{session_id}.{'A' * 43}"
    anonymous = _sessions(channel_to, None)
    stranger = _sessions(channel_to, new_user().token)
    get = cart_pb2.GetSessionRequest(session_id=session_id)

    assert await _refused(anonymous.GetSession(get, timeout=5)) == (
        "UNAUTHENTICATED SESSION_CREDENTIAL_MISSING"
    )
    for bad in (wrong, "not-a-credential", f"{session_id}.short", credential + "x" * 200):
        assert await _refused(anonymous.GetSession(get, metadata=_holding(bad), timeout=5)) == (
            "UNAUTHENTICATED SESSION_CREDENTIAL_INVALID"
        ), bad
    # Another session's (valid) credential does not open this one.
    assert await _refused(
        anonymous.GetSession(get, metadata=_holding(other_credential), timeout=5)
    ) == ("PERMISSION_DENIED NOT_SESSION_HOLDER")
    # A signed-in user it is not bound to, without the credential.
    assert await _refused(stranger.GetSession(get, timeout=5)) == (
        "UNAUTHENTICATED SESSION_CREDENTIAL_MISSING"
    )
    # Every RPC that names a session checks it the same way.
    for call in (
        anonymous.TouchSession(
            cart_pb2.TouchSessionRequest(session_id=session_id), metadata=_holding(wrong)
        ),
        anonymous.UpdatePreferences(
            cart_pb2.UpdatePreferencesRequest(session_id=session_id), metadata=_holding(wrong)
        ),
        anonymous.DeleteSession(
            cart_pb2.DeleteSessionRequest(session_id=session_id), metadata=_holding(wrong)
        ),
    ):
        assert await _refused(call) == "UNAUTHENTICATED SESSION_CREDENTIAL_INVALID"
    # Malformed and unknown session ids.
    assert await _refused(
        anonymous.GetSession(
            cart_pb2.GetSessionRequest(session_id="a.b"), metadata=_holding(credential)
        )
    ) == ("INVALID_ARGUMENT INVALID_FIELD")
    assert await _refused(
        anonymous.GetSession(
            cart_pb2.GetSessionRequest(session_id="no-such-session"),
            metadata=_holding(credential),
        )
    ) == ("NOT_FOUND SESSION_NOT_FOUND")
    # Nothing was changed by the refused calls.
    still = await anonymous.GetSession(get, metadata=_holding(credential), timeout=5)
    assert still.session == session
    assert other_session.session_id != session_id


# --- the session's RPCs ----------------------------------------------------------------


async def test_preferences_are_validated_and_updated_under_the_etag(
    channel_to: ChannelTo,
) -> None:
    anonymous = _sessions(channel_to, None)
    for preferences, field in (
        (cart_pb2.Preferences(currency_code="usd"), "preferences.currency_code"),
        (cart_pb2.Preferences(currency_code="XAU"), "preferences.currency_code"),
        (cart_pb2.Preferences(currency_code="ABC"), "preferences.currency_code"),
        (cart_pb2.Preferences(language="xx-YY"), "preferences.language"),
        (cart_pb2.Preferences(language="english"), "preferences.language"),
        (cart_pb2.Preferences(language="en-" + "a" * 40), "preferences.language"),
        (cart_pb2.Preferences(theme="blue"), "preferences.theme"),
    ):
        try:
            await anonymous.CreateSession(
                cart_pb2.CreateSessionRequest(preferences=preferences), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == Code.INVALID_ARGUMENT
            bad_request = details_of_error(exc).bad_request
            assert bad_request is not None
            assert [v.field for v in bad_request.field_violations] == [field]
        else:
            raise AssertionError(f"{preferences} was accepted")

    session, credential = await _new_session(channel_to, language="EN-us")
    assert session.preferences.language == "en-US"  # its canonical form
    update = cart_pb2.UpdatePreferencesRequest(
        session_id=session.session_id,
        preferences=cart_pb2.Preferences(currency_code="JPY", language="pt-BR", theme="system"),
        etag=session.etag,
    )
    updated = (
        await anonymous.UpdatePreferences(update, metadata=_holding(credential), timeout=5)
    ).session
    assert updated.preferences == update.preferences
    assert updated.etag != session.etag
    # The etag it was written over is stale now: ABORTED, nothing written.
    update.preferences.theme = "dark"
    assert await _refused(
        anonymous.UpdatePreferences(update, metadata=_holding(credential), timeout=5)
    ) == ("ABORTED ETAG_MISMATCH")
    update.etag = ""  # no precondition
    final = (
        await anonymous.UpdatePreferences(update, metadata=_holding(credential), timeout=5)
    ).session
    assert final.preferences.theme == "dark"


async def test_touch_keeps_the_last_50_activities_and_extends_the_session(
    channel_to: ChannelTo,
) -> None:
    session, credential = await _new_session(channel_to)
    anonymous = _sessions(channel_to, None)

    def touch(n: int) -> Any:
        activity = cart_pb2.Activity(action="view_book", details_json=json.dumps({"n": n}))
        return anonymous.TouchSession(
            cart_pb2.TouchSessionRequest(session_id=session.session_id, activity=activity),
            metadata=_holding(credential),
            timeout=20,
        )

    # Concurrent appends all land (each is conditioned on the version it read).
    await asyncio.gather(*(touch(n) for n in range(20)))
    got = (
        await anonymous.GetSession(
            cart_pb2.GetSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        )
    ).session
    arrived = [json.loads(a.details_json)["n"] for a in got.recent_activity]
    assert sorted(arrived) == list(range(20))
    # Then in order, past the bound: the oldest are dropped.
    for n in range(20, 60):
        last = (await touch(n)).session
    numbers = [json.loads(a.details_json)["n"] for a in last.recent_activity]
    assert numbers == arrived[10:] + list(range(20, 60))
    assert all(a.action == "view_book" and a.time.seconds > 0 for a in last.recent_activity)
    assert last.last_access_time.seconds >= session.last_access_time.seconds
    assert last.expire_time.seconds - last.last_access_time.seconds == 30 * 86400
    # A touch without activity only extends the session.
    plain = await anonymous.TouchSession(
        cart_pb2.TouchSessionRequest(session_id=session.session_id),
        metadata=_holding(credential),
    )
    assert len(plain.session.recent_activity) == 50

    for activity, field in (
        (cart_pb2.Activity(action=""), "activity.action"),
        (cart_pb2.Activity(action="View Book"), "activity.action"),
        (cart_pb2.Activity(action="x" * 65), "activity.action"),
        (cart_pb2.Activity(action="search", details_json="[1, 2]"), "activity.details_json"),
        (cart_pb2.Activity(action="search", details_json="{"), "activity.details_json"),
        (
            cart_pb2.Activity(action="search", details_json=json.dumps({"q": "x" * 3000})),
            "activity.details_json",
        ),
    ):
        try:
            await anonymous.TouchSession(
                cart_pb2.TouchSessionRequest(session_id=session.session_id, activity=activity),
                metadata=_holding(credential),
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == Code.INVALID_ARGUMENT, activity
            bad_request = details_of_error(exc).bad_request
            assert bad_request is not None
            assert [v.field for v in bad_request.field_violations] == [field]
        else:
            raise AssertionError(f"{activity} was accepted")


async def test_delete_session(channel_to: ChannelTo) -> None:
    session, credential = await _new_session(channel_to)
    anonymous = _sessions(channel_to, None)
    delete = cart_pb2.DeleteSessionRequest(session_id=session.session_id)
    await anonymous.DeleteSession(delete, metadata=_holding(credential), timeout=5)
    assert await _refused(
        anonymous.GetSession(
            cart_pb2.GetSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        )
    ) == ("NOT_FOUND SESSION_NOT_FOUND")
    assert await _refused(anonymous.DeleteSession(delete, metadata=_holding(credential))) == (
        "NOT_FOUND SESSION_NOT_FOUND"
    )
    # Its cart is not reachable with the credential any more.
    assert await _refused(
        _carts(channel_to, None).GetCart(cart_pb2.GetCartRequest(), metadata=_holding(credential))
    ) == ("UNAUTHENTICATED SESSION_CREDENTIAL_INVALID")


async def test_an_expired_session_reads_as_absent_before_it_is_deleted(
    channel_to: ChannelTo, dynamodb: Any, tables: tuple[str, str]
) -> None:
    session, credential = await _new_session(channel_to)
    _expire_session(dynamodb, tables[1], session.session_id)
    anonymous = _sessions(channel_to, None)
    # Still stored, but past its expiry.
    assert "Item" in dynamodb.get_item(
        TableName=tables[1], Key={"sessionId": {"S": session.session_id}}
    )
    for call in (
        anonymous.GetSession(
            cart_pb2.GetSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        ),
        anonymous.TouchSession(
            cart_pb2.TouchSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        ),
        anonymous.DeleteSession(
            cart_pb2.DeleteSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        ),
    ):
        assert await _refused(call) == "NOT_FOUND SESSION_NOT_FOUND"
    assert await _refused(
        _carts(channel_to, None).GetCart(cart_pb2.GetCartRequest(), metadata=_holding(credential))
    ) == ("UNAUTHENTICATED SESSION_CREDENTIAL_INVALID")


# --- anonymous carts -------------------------------------------------------------------


async def test_an_anonymous_cart_is_addressed_by_its_sessions_credential(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    dynamodb: Any,
    tables: tuple[str, str],
) -> None:
    book_id = await _book(catalog, 1500)
    session, credential = await _new_session(channel_to)
    carts = _carts(channel_to, None)
    held = _holding(credential)

    cart = (
        await carts.AddItem(cart_pb2.AddItemRequest(book_id=book_id, quantity=2), metadata=held)
    ).cart
    assert cart.owner == cart_pb2.CartOwner(session_id=session.session_id)
    assert _quantities(cart) == {book_id: 2}
    cart = (
        await carts.UpdateItemQuantity(
            cart_pb2.UpdateItemQuantityRequest(book_id=book_id, quantity=7, etag=cart.etag),
            metadata=held,
        )
    ).cart
    assert _quantities(cart) == {book_id: 7}
    assert (await carts.GetCart(cart_pb2.GetCartRequest(), metadata=held)).cart == cart
    # A request_id of an anonymous session is applied once.
    second = await _book(catalog, 200)
    add = cart_pb2.AddItemRequest(book_id=second, quantity=1, request_id=str(uuid.uuid4()))
    first_answer = await carts.AddItem(add, metadata=held)
    assert await carts.AddItem(add, metadata=held) == first_answer
    assert _quantities(first_answer.cart) == {book_id: 7, second: 1}
    await carts.RemoveItem(cart_pb2.RemoveItemRequest(book_id=second), metadata=held)

    # Stored under session#<id>, with sessionId for the SessionIndex.
    item = _cart_item(dynamodb, tables[0], f"session#{session.session_id}")
    assert item is not None and item["sessionId"]["S"] == session.session_id
    found = dynamodb.query(
        TableName=tables[0],
        IndexName="SessionIndex",
        KeyConditionExpression="sessionId = :s",
        ExpressionAttributeValues={":s": {"S": session.session_id}},
    )["Items"]
    assert [entry["userId"]["S"] for entry in found] == [f"session#{session.session_id}"]

    # No credential, a wrong one, a malformed one: refused, and nothing written.
    wrong = f"{session.session_id}.{'B' * 43}"
    add_one = cart_pb2.AddItemRequest(book_id=book_id, quantity=1)
    assert await _refused(carts.AddItem(add_one)) == "UNAUTHENTICATED SESSION_CREDENTIAL_MISSING"
    assert await _refused(carts.AddItem(add_one, metadata=_holding(wrong))) == (
        "UNAUTHENTICATED SESSION_CREDENTIAL_INVALID"
    )
    assert await _refused(carts.ClearCart(cart_pb2.ClearCartRequest(), metadata=_holding("x"))) == (
        "UNAUTHENTICATED SESSION_CREDENTIAL_INVALID"
    )
    assert _quantities((await carts.GetCart(cart_pb2.GetCartRequest(), metadata=held)).cart) == {
        book_id: 7
    }
    # A signed-in shopper's token wins: the cart is theirs, not the session's.
    shopper_cart = (
        await _carts(channel_to, new_user().token).GetCart(cart_pb2.GetCartRequest(), metadata=held)
    ).cart
    assert shopper_cart.owner.user_id and not shopper_cart.items
    await carts.ClearCart(cart_pb2.ClearCartRequest(), metadata=held)
    assert not (await carts.GetCart(cart_pb2.GetCartRequest(), metadata=held)).cart.items


# --- sign-in: AuthenticateSession and MergeCarts ----------------------------------------


async def _anonymous_cart(
    channel_to: ChannelTo, lines: dict[int, int]
) -> tuple[cart_pb2.Session, str]:
    session, credential = await _new_session(channel_to)
    carts = _carts(channel_to, None)
    for book_id, quantity in lines.items():
        await carts.AddItem(
            cart_pb2.AddItemRequest(book_id=book_id, quantity=quantity),
            metadata=_holding(credential),
        )
    return session, credential


async def _user_cart(channel_to: ChannelTo, user: User, lines: dict[int, int]) -> cart_pb2.Cart:
    carts = _carts(channel_to, user.token)
    cart: cart_pb2.Cart = (await carts.GetCart(cart_pb2.GetCartRequest())).cart
    for book_id, quantity in lines.items():
        cart = (
            await carts.AddItem(cart_pb2.AddItemRequest(book_id=book_id, quantity=quantity))
        ).cart
    return cart


async def test_authenticate_session_merges_the_anonymous_cart_once(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    dynamodb: Any,
    tables: tuple[str, str],
) -> None:
    a, b, c = [await _book(catalog, price) for price in (1000, 250, 99)]
    user = new_user()
    await _user_cart(channel_to, user, {a: 3, b: 60})
    session, credential = await _anonymous_cart(channel_to, {a: 2, b: 70, c: 1})
    signed_in = _sessions(channel_to, user.token)
    authenticate = cart_pb2.AuthenticateSessionRequest(session_id=session.session_id)

    bound = (
        await signed_in.AuthenticateSession(authenticate, metadata=_holding(credential))
    ).session
    assert bound.user_id == user.subject and bound.is_authenticated
    cart = (await _carts(channel_to, user.token).GetCart(cart_pb2.GetCartRequest())).cart
    # Summed, and capped at the per-line limit of 100.
    assert _quantities(cart) == {a: 5, b: 100, c: 1}
    assert cart.total_amount == usd(5 * 1000 + 100 * 250 + 99)
    # The anonymous cart is gone: a tombstone naming the user's cart in its place (put in
    # the same transaction), no lines.
    tombstone = _cart_item(dynamodb, tables[0], f"session#{session.session_id}")
    assert tombstone is not None and "items" not in tombstone
    assert tombstone["mergedInto"] == {"S": f"user#{user.subject}"}

    # A retry changes nothing more: same session, same cart.
    again = (
        await signed_in.AuthenticateSession(authenticate, metadata=_holding(credential))
    ).session
    assert again.etag == bound.etag
    assert (await _carts(channel_to, user.token).GetCart(cart_pb2.GetCartRequest())).cart == cart
    # ... also without the credential: the session is the caller's now.
    assert (await signed_in.AuthenticateSession(authenticate)).session.etag == bound.etag

    # The credential alone opens nothing any more (it may have been planted: fixation).
    anonymous_carts = _carts(channel_to, None)
    assert await _refused(
        anonymous_carts.AddItem(
            cart_pb2.AddItemRequest(book_id=a, quantity=1), metadata=_holding(credential)
        )
    ) == ("UNAUTHENTICATED SESSION_SIGNED_IN")
    assert await _refused(
        _sessions(channel_to, None).GetSession(
            cart_pb2.GetSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        )
    ) == ("UNAUTHENTICATED SESSION_SIGNED_IN")
    # Its user reads it with the token alone.
    got = await signed_in.GetSession(cart_pb2.GetSessionRequest(session_id=session.session_id))
    assert got.session.user_id == user.subject

    # Another user holding the credential cannot take the session over.
    intruder = new_user()
    assert await _refused(
        _sessions(channel_to, intruder.token).AuthenticateSession(
            authenticate, metadata=_holding(credential)
        )
    ) == ("PERMISSION_DENIED SESSION_BOUND_TO_ANOTHER_USER")
    assert await _refused(
        _carts(channel_to, intruder.token).MergeCarts(
            cart_pb2.MergeCartsRequest(session_id=session.session_id),
            metadata=_holding(credential),
        )
    ) == ("PERMISSION_DENIED SESSION_BOUND_TO_ANOTHER_USER")
    assert await _refused(
        _sessions(channel_to, intruder.token).GetSession(
            cart_pb2.GetSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        )
    ) == ("PERMISSION_DENIED NOT_SESSION_HOLDER")
    assert not (
        await _carts(channel_to, intruder.token).GetCart(cart_pb2.GetCartRequest())
    ).cart.items

    # Binding needs the session's credential, and a signed-in caller.
    other, other_credential = await _new_session(channel_to)
    other_request = cart_pb2.AuthenticateSessionRequest(session_id=other.session_id)
    assert await _refused(signed_in.AuthenticateSession(other_request)) == (
        "UNAUTHENTICATED SESSION_CREDENTIAL_MISSING"
    )
    assert await _refused(
        signed_in.AuthenticateSession(other_request, metadata=_holding(credential))
    ) == ("PERMISSION_DENIED NOT_SESSION_HOLDER")
    assert await _refused(
        _sessions(channel_to, None).AuthenticateSession(
            other_request, metadata=_holding(other_credential)
        )
    ) == ("UNAUTHENTICATED TOKEN_MISSING")


async def test_merge_carts_takes_the_etag_and_a_request_id(
    channel_to: ChannelTo,
    catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
    new_user: NewUser,
    dynamodb: Any,
    tables: tuple[str, str],
) -> None:
    a, b = await _book(catalog, 500), await _book(catalog, 700)
    user = new_user()
    before = await _user_cart(channel_to, user, {a: 1})
    session, credential = await _anonymous_cart(channel_to, {a: 4, b: 2})
    carts = _carts(channel_to, user.token)
    held = _holding(credential)

    # A stale etag of the user's cart: ABORTED, nothing moved, nothing bound.
    await carts.AddItem(cart_pb2.AddItemRequest(book_id=b, quantity=1))
    stale = cart_pb2.MergeCartsRequest(session_id=session.session_id, etag=before.etag)
    assert await _refused(carts.MergeCarts(stale, metadata=held)) == "ABORTED ETAG_MISMATCH"
    kept = _cart_item(dynamodb, tables[0], f"session#{session.session_id}")
    assert kept is not None and "items" in kept and "mergedInto" not in kept
    unbound = await _sessions(channel_to, None).GetSession(
        cart_pb2.GetSessionRequest(session_id=session.session_id), metadata=held
    )
    assert not unbound.session.user_id

    current = (await carts.GetCart(cart_pb2.GetCartRequest())).cart
    merge = cart_pb2.MergeCartsRequest(
        session_id=session.session_id, etag=current.etag, request_id=str(uuid.uuid4())
    )
    merged = (await carts.MergeCarts(merge, metadata=held)).cart
    assert merged.owner.user_id == user.subject
    assert _quantities(merged) == {a: 5, b: 3}
    assert (await carts.GetCart(cart_pb2.GetCartRequest())).cart == merged
    tombstone = _cart_item(dynamodb, tables[0], f"session#{session.session_id}")
    assert tombstone is not None and "items" not in tombstone and "mergedInto" in tombstone
    # The same request again: its first answer, applied once (its etag is stale now).
    assert (await carts.MergeCarts(merge, metadata=held)).cart == merged
    # The same request_id with another request is refused.
    reused = cart_pb2.MergeCartsRequest(session_id=session.session_id, request_id=merge.request_id)
    assert await _refused(carts.MergeCarts(reused, metadata=held)) == (
        "FAILED_PRECONDITION REQUEST_ID_REUSED"
    )
    # A new merge of the same session finds nothing to move.
    assert (
        await carts.MergeCarts(cart_pb2.MergeCartsRequest(session_id=session.session_id))
    ).cart == merged
    # Bound like AuthenticateSession binds.
    bound = await _sessions(channel_to, user.token).GetSession(
        cart_pb2.GetSessionRequest(session_id=session.session_id)
    )
    assert bound.session.user_id == user.subject
    # MergeCarts is for signed-in callers.
    assert await _refused(
        _carts(channel_to, None).MergeCarts(
            cart_pb2.MergeCartsRequest(session_id=session.session_id), metadata=held
        )
    ) == ("UNAUTHENTICATED TOKEN_MISSING")


def _stored_line(book_id: int, quantity: int) -> dict[str, Any]:
    return {
        "M": {
            "bookId": {"N": str(book_id)},
            "title": {"S": f"Book {book_id}"},
            "priceMinor": {"N": "100"},
            "quantity": {"N": str(quantity)},
            "addedAt": {"S": "2026-11-26T00:00:00+00:00"},
        }
    }


def _put_cart(dynamodb: Any, table: str, key: str, book_ids: range, **extra: Any) -> None:
    """A cart of one copy of each book, written as the store writes one (a merge does not
    ask the catalog: the lines need no catalog books)."""
    dynamodb.put_item(
        TableName=table,
        Item={
            "userId": {"S": key},
            "cartId": {"S": "current"},
            "items": {"M": {str(b): _stored_line(b, 1) for b in book_ids}},
            "lineCount": {"N": str(len(book_ids))},
            "currency": {"S": "USD"},
            "version": {"N": "1"},
            "lastModified": {"S": "2026-11-26T00:00:00+00:00"},
            "expiresAt": {"N": str(int(time.time()) + 86400)},
            **extra,
        },
    )


async def test_a_merge_over_100_lines_is_refused_and_writes_nothing(
    channel_to: ChannelTo, new_user: NewUser, dynamodb: Any, tables: tuple[str, str]
) -> None:
    user = new_user()
    session, credential = await _new_session(channel_to)
    session_key = f"session#{session.session_id}"
    _put_cart(dynamodb, tables[0], f"user#{user.subject}", range(10_001, 10_061))
    _put_cart(
        dynamodb,
        tables[0],
        session_key,
        range(10_051, 10_111),
        sessionId={"S": session.session_id},
    )
    before = _cart_item(dynamodb, tables[0], f"user#{user.subject}")
    signed_in = _sessions(channel_to, user.token)
    request = cart_pb2.AuthenticateSessionRequest(session_id=session.session_id)
    try:
        await signed_in.AuthenticateSession(request, metadata=_holding(credential))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == Code.FAILED_PRECONDITION
        info = details_of_error(exc).error_info
        assert info is not None and info.reason == "LINE_LIMIT"
        assert dict(info.metadata) == {"limit": "100", "lines": "110"}
    else:
        raise AssertionError("a merge of 110 lines was accepted")
    assert _cart_item(dynamodb, tables[0], f"user#{user.subject}") == before
    assert _cart_item(dynamodb, tables[0], session_key) is not None
    # The visitor trims the anonymous cart with its credential alone, then signs in.
    carts = _carts(channel_to, None)
    for book_id in range(10_101, 10_111):
        await carts.RemoveItem(
            cart_pb2.RemoveItemRequest(book_id=book_id), metadata=_holding(credential)
        )
    await signed_in.AuthenticateSession(request, metadata=_holding(credential))
    cart = (await _carts(channel_to, user.token).GetCart(cart_pb2.GetCartRequest())).cart
    assert len(cart.items) == 100
    assert _quantities(cart)[10_055] == 2 and _quantities(cart)[10_070] == 1


# --- ListUserSessions ------------------------------------------------------------------


async def test_list_user_sessions_pages_through_the_callers_own_only(
    channel_to: ChannelTo, new_user: NewUser, dynamodb: Any, tables: tuple[str, str]
) -> None:
    user, other = new_user(), new_user()

    async def bound_session(owner: User) -> str:
        session, credential = await _new_session(channel_to)
        await _sessions(channel_to, owner.token).AuthenticateSession(
            cart_pb2.AuthenticateSessionRequest(session_id=session.session_id),
            metadata=_holding(credential),
        )
        return str(session.session_id)

    mine = {await bound_session(user) for _ in range(5)}
    theirs = await bound_session(other)
    expired = await bound_session(user)
    _expire_session(dynamodb, tables[1], expired)
    await _new_session(channel_to)  # anonymous: nobody's

    listing = _sessions(channel_to, user.token)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await listing.ListUserSessions(
            cart_pb2.ListUserSessionsRequest(page_size=2, page_token=token)
        )
        assert len(page.sessions) <= 2
        assert all(s.user_id == user.subject and s.is_authenticated for s in page.sessions)
        seen += [s.session_id for s in page.sessions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
        # Another user cannot continue this listing with the token.
        if pages == 1:
            assert await _refused(
                _sessions(channel_to, other.token).ListUserSessions(
                    cart_pb2.ListUserSessionsRequest(page_size=2, page_token=token)
                )
            ) == ("INVALID_ARGUMENT INVALID_PAGE_TOKEN")
    assert sorted(seen) == sorted(mine) and len(seen) == 5
    assert pages >= 3
    theirs_page = await _sessions(channel_to, other.token).ListUserSessions(
        cart_pb2.ListUserSessionsRequest()
    )
    assert [s.session_id for s in theirs_page.sessions] == [theirs]
    assert not theirs_page.next_page_token

    assert await _refused(
        listing.ListUserSessions(cart_pb2.ListUserSessionsRequest(page_size=-1))
    ) == ("INVALID_ARGUMENT INVALID_FIELD")
    assert await _refused(
        listing.ListUserSessions(cart_pb2.ListUserSessionsRequest(page_token="forged.token"))
    ) == ("INVALID_ARGUMENT INVALID_PAGE_TOKEN")
    assert await _refused(
        _sessions(channel_to, None).ListUserSessions(cart_pb2.ListUserSessionsRequest())
    ) == ("UNAUTHENTICATED TOKEN_MISSING")
