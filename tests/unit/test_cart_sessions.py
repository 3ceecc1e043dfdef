"""The pure parts of cart sessions: what is kept of the client's address, the credential's
parsing and check, activity details, the merge's sums and caps, and the forwarding of the
credential to peers by the runtime's client interceptor."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from cloudshelf.runtime import auth
from cloudshelf.runtime.errors import FailedPrecondition, Unauthenticated
from services.cart.owners import SessionCredential, presented_credential
from services.cart.sessions import (
    activity_details,
    new_secret,
    new_session_id,
    secret_hash,
    truncated_ip,
)
from services.cart.store import MAX_LINES, MAX_QUANTITY, _merge_change


@pytest.mark.parametrize(
    ("address", "kept"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:7:1234::42", "2001:db8:7::/48"),
        ("::1", "::/48"),
        (None, None),
        ("", None),
        ("not an address", None),
    ],
)
def test_the_address_is_kept_as_its_network(address: str | None, kept: str | None) -> None:
    assert truncated_ip(address) == kept


def test_ids_and_secrets_are_random_and_dot_free() -> None:
    ids = {new_session_id() for _ in range(200)}
    secrets_ = {new_secret() for _ in range(200)}
    assert len(ids) == 200 and len(secrets_) == 200
    assert all(len(i) == 22 and "." not in i for i in ids)  # 128 bits
    assert all(len(s) == 43 and "." not in s for s in secrets_)  # 256 bits


class _Context:
    def __init__(self, *metadata: tuple[str, Any]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata


def test_the_credential_is_parsed_and_checked() -> None:
    session_id, secret = new_session_id(), new_secret()
    credential = presented_credential(
        _Context(("x-session-credential", f"{session_id}.{secret}"))  # type: ignore[arg-type]
    )
    assert credential == SessionCredential(session_id, secret)
    assert secret not in repr(credential)
    item = {"sessionId": session_id, "secretHash": secret_hash(secret)}
    assert credential.opens(item)
    assert not SessionCredential(session_id, new_secret()).opens(item)
    assert not SessionCredential(new_session_id(), secret).opens(item)
    assert not credential.opens({"sessionId": session_id})
    assert presented_credential(_Context()) is None  # type: ignore[arg-type]
    for metadata in (
        (("x-session-credential", "no-dot"),),
        (("x-session-credential", f"{session_id}."),),
        (("x-session-credential", f".{secret}"),),
        (("x-session-credential", f"{session_id}.{secret}!"),),
        (("x-session-credential", f"{'a' * 65}.{secret}"),),
        (("x-session-credential", f"{session_id}.{secret}"),) * 2,
    ):
        with pytest.raises(Unauthenticated) as refused:
            presented_credential(_Context(*metadata))  # type: ignore[arg-type]
        assert refused.value.reason == "SESSION_CREDENTIAL_INVALID"
        assert secret not in str(refused.value)


def test_activity_details_must_be_a_small_json_object() -> None:
    assert activity_details('{"a": 1,  "b": [1, 2]}', 100) == '{"a":1,"b":[1,2]}'
    assert activity_details('{"é": "ü"}', 100) == '{"é":"ü"}'
    for bad in ("[1]", '"text"', "1", "{", "", '{"a": "' + "x" * 200 + '"}', "[" * 5000):
        assert activity_details(bad, 100) is None, bad


def _line(book_id: int, quantity: int) -> dict[str, Any]:
    return {"bookId": book_id, "title": "t", "priceMinor": 100, "quantity": quantity}


def _cart(lines: dict[int, int], currency: str = "USD") -> dict[str, Any]:
    return {
        "userId": "user#u",
        "cartId": "current",
        "items": {str(b): _line(b, q) for b, q in lines.items()},
        "lineCount": len(lines),
        "currency": currency,
        "version": 4,
        "expiresAt": 2_000_000_000,
    }


def test_the_merge_sums_caps_and_refuses_too_many_lines() -> None:
    user = _cart({1: 3, 2: 60})
    change = _merge_change(user, user, _cart({1: 2, 2: 70, 3: 1}), "user#u", "sid", 1_000, "stamp")
    after = change.after
    assert after is not None
    quantities = {int(k): v["quantity"] for k, v in after["items"].items()}
    assert quantities == {1: 5, 2: MAX_QUANTITY, 3: 1}
    assert after["lineCount"] == 3 and after["version"] == 5
    assert change.values[":read_version"] == 4  # conditioned on the version read
    # Only the lines that change are written: one SET per line.
    assert change.update.count("#items.#b") == 3

    fresh = _merge_change(None, None, _cart({7: 2}), "user#u", "sid", 1_000, "stamp")
    assert fresh.after is not None and fresh.after["items"]["7"]["quantity"] == 2
    assert "attribute_not_exists(userId)" in fresh.condition

    full = _cart({b: 1 for b in range(MAX_LINES)})
    with pytest.raises(FailedPrecondition) as refused:
        _merge_change(full, full, _cart({MAX_LINES + 5: 1}), "user#u", "sid", 1_000, "stamp")
    assert refused.value.reason == "LINE_LIMIT"
    with pytest.raises(FailedPrecondition) as mismatch:
        _merge_change(user, user, _cart({9: 1}, "EUR"), "user#u", "sid", 1_000, "stamp")
    assert mismatch.value.reason == "CURRENCY_MISMATCH"


async def _sent_metadata(
    interceptor: auth.CallerCredentials, method: str = "/cloudshelf.cart.v1.CartService/GetCart"
) -> dict[str, str]:
    seen: dict[str, str] = {}

    async def continuation(details: grpc.aio.ClientCallDetails, request: Any) -> None:
        seen.update({key: str(value) for key, value in details.metadata or ()})

    details = grpc.aio.ClientCallDetails(method, 5.0, grpc.aio.Metadata(), None, None)
    await interceptor.intercept_unary_unary(continuation, details, object())
    return seen


async def test_the_session_credential_is_forwarded_to_peers() -> None:
    interceptor = auth.CallerCredentials()
    incoming = auth._IncomingCall(None, None, "sid.secret")
    token = auth._incoming.set(incoming)
    try:
        assert await _sent_metadata(interceptor) == {"x-session-credential": "sid.secret"}
        # Health is open: nothing is sent there.
        assert await _sent_metadata(interceptor, "/grpc.health.v1.Health/Check") == {}
        # Work done as the service carries the service's identity, not the visitor's.
        with auth.acting_as_service():
            assert "x-session-credential" not in await _sent_metadata(interceptor)
    finally:
        auth._incoming.reset(token)
    # Outside any call there is no visitor.
    assert "x-session-credential" not in await _sent_metadata(interceptor)


def test_the_interceptor_keeps_one_text_credential() -> None:
    assert auth._text_entry([("x-session-credential", "a.b")], auth.SESSION_CREDENTIAL) == "a.b"
    assert auth._text_entry([], auth.SESSION_CREDENTIAL) is None
    twice = [("x-session-credential", "a.b"), ("x-session-credential", "c.d")]
    assert auth._text_entry(twice, auth.SESSION_CREDENTIAL) is None
    assert auth._text_entry([("x-session-credential", b"a.b")], auth.SESSION_CREDENTIAL) is None
