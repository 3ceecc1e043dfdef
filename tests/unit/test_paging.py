"""Signed page tokens: a forged, changed or malformed token is INVALID_ARGUMENT
"page_token: ...", never an exception deeper down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest

from cloudshelf.runtime import paging
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.paging import (
    PAGE_TOKEN_KEY_ENV,
    Int,
    Shape,
    Text,
    decode_page_token,
    encode_page_token,
    page_token_key,
)

QUERY = {"category": 7, "size": 20}
AFTER: Shape = {"after": Int()}


@pytest.fixture(autouse=True)
def fixed_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(PAGE_TOKEN_KEY_ENV, "k" * 40)
    page_token_key.cache_clear()
    yield
    page_token_key.cache_clear()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signed(payload: bytes) -> str:
    """A token signed with the service's key around any payload: what a caller who stole
    the key, or an older release, could produce."""
    mac = hmac.new(page_token_key(), paging._CONTEXT + payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(mac)}"


def _signed_position(position: object, query: object = QUERY) -> str:
    return _signed(json.dumps({"p": position, "q": paging._fingerprint(query)}).encode())


def _refused(token: str, shape: Shape = AFTER) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, QUERY, shape)
    assert caught.value.field == "page_token"
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    return caught.value.message


def test_a_token_round_trips() -> None:
    token = encode_page_token({"after": 42}, QUERY)
    assert decode_page_token(token, QUERY, AFTER) == {"after": 42}
    assert decode_page_token("", QUERY, AFTER) is None
    composite: Shape = {"after": (Text(100), Text(100), Int())}
    token = encode_page_token({"after": ["Austen", "Jane", 3]}, QUERY)
    assert decode_page_token(token, QUERY, composite) == {"after": ["Austen", "Jane", 3]}


def test_unsigned_tokens_of_the_old_format_are_refused() -> None:
    old = _b64(json.dumps({"p": {"offset": -20}, "q": paging._fingerprint(QUERY)}).encode())
    assert "not a token this service issued" in _refused(old)


def test_a_changed_token_is_refused() -> None:
    token = encode_page_token({"after": 42}, QUERY)
    payload, mac = token.split(".")
    forged = _b64(json.dumps({"p": {"after": 1}, "q": paging._fingerprint(QUERY)}).encode())
    assert "not a token" in _refused(f"{forged}.{mac}")
    assert "not a token" in _refused(f"{payload}.{mac[:-2]}AA")
    assert "not a token" in _refused(payload)


def test_a_token_signed_with_another_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    token = encode_page_token({"after": 42}, QUERY)
    monkeypatch.setenv(PAGE_TOKEN_KEY_ENV, "another key of forty characters.........")
    page_token_key.cache_clear()
    assert "another key" in _refused(token)


def test_a_token_of_another_query_is_refused() -> None:
    token = encode_page_token({"after": 42}, {"category": 8, "size": 20})
    assert "different query" in _refused(token)


@pytest.mark.parametrize(
    "garbage",
    ["not-a-token!", "..", "a.b.c", "é.ü", "%%%%", "x" * 5000, "\x00", "AAAA.AAAA"],
)
def test_garbage_is_refused(garbage: str) -> None:
    _refused(garbage)


@pytest.mark.parametrize(
    ("position", "problem"),
    [
        ({"after": -1}, "between 0 and"),
        ({"after": 2**31}, "between 0 and"),
        ({"after": 10**30}, "between 0 and"),
        ({"after": "x"}, "must be an integer"),
        ({"after": 1.5}, "must be an integer"),
        ({"after": True}, "must be an integer"),
        ({"after": None}, "must be an integer"),
        ({"after": [1]}, "must be an integer"),
        ({"after": {"x": 1}}, "must be an integer"),
        ({}, "exactly ['after']"),
        ({"after": 1, "extra": 2}, "exactly ['after']"),
        ([1], "exactly ['after']"),
        ("after", "exactly ['after']"),
    ],
)
def test_signed_positions_are_checked_against_the_shape(position: object, problem: str) -> None:
    assert problem in _refused(_signed_position(position))


@pytest.mark.parametrize(
    ("position", "problem"),
    [
        ({"after": [1]}, "list of 3 values"),
        ({"after": ["a", "b", 1, 2]}, "list of 3 values"),
        ({"after": "abc"}, "list of 3 values"),
        ({"after": [1, "b", 1]}, "after[0] must be a string"),
        ({"after": ["a", "b", "c"]}, "after[2] must be an integer"),
        ({"after": ["a" * 101, "b", 1]}, "at most 100 characters"),
        ({"after": ["a\x00", "b", 1]}, "control character U+0000"),
    ],
)
def test_composite_positions_are_checked(position: object, problem: str) -> None:
    shape: Shape = {"after": (Text(100), Text(100), Int())}
    assert problem in _refused(_signed_position(position), shape)


def test_deeply_nested_json_is_refused_not_a_recursion_error() -> None:
    # 1,500 levels fit in the longest token accepted, and go past the JSON parser's
    # recursion limit (1,000).
    nested = b"[" * 1500
    token = _signed(nested)
    assert len(token) <= paging.MAX_TOKEN_LENGTH
    with pytest.raises(RecursionError):
        json.loads(nested)
    assert "not a token" in _refused(token)


def test_long_tokens_are_refused_before_any_work() -> None:
    assert "too long" in _refused(_signed(b"[" * 100_000 + b"]" * 100_000))


@pytest.mark.parametrize("payload", [b"[]", b"null", b"1", b'{"p": {"after": 1}}', b"\xff\xfe"])
def test_signed_payloads_of_the_wrong_form_are_refused(payload: bytes) -> None:
    assert "not a token" in _refused(_signed(payload))


def test_without_a_configured_key_each_process_has_its_own(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(PAGE_TOKEN_KEY_ENV)
    page_token_key.cache_clear()
    first = page_token_key()
    assert len(first) == 32 and page_token_key() is first
    assert PAGE_TOKEN_KEY_ENV in caplog.text
    page_token_key.cache_clear()
    assert page_token_key() != first
