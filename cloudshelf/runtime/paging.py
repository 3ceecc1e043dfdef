"""Opaque, signed page tokens.

A token carries where the next page starts plus a fingerprint of the query it belongs to,
so a token replayed with other filters is refused instead of returning a wrong page. It is
signed (HMAC-SHA256) with the key in CLOUDSHELF_PAGE_TOKEN_KEY, shared by every replica
of a service: a token a caller made up, or changed, is refused before it is even parsed.
The position inside is then checked against the shape the handler expects (types and
ranges), so even a token signed by an older release cannot put a bad value into a query.
Every refusal is INVALID_ARGUMENT "page_token: ...".
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.validation import control_character_problem

T = TypeVar("T")
log = logging.getLogger("cloudshelf.paging")

PAGE_TOKEN_KEY_ENV = "CLOUDSHELF_PAGE_TOKEN_KEY"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
# Far above any token we issue (a position of a few keys); bounds the work on a forged one.
MAX_TOKEN_LENGTH = 2048
_MAC_BYTES = 16  # 128-bit tag
_CONTEXT = b"cloudshelf page token v1\x00"


@dataclass(frozen=True)
class Int:
    """An integer position value within [low, high]."""

    low: int = 0
    high: int = 2**31 - 1


@dataclass(frozen=True)
class Text:
    """A string position value (a sort key) of at most max_length characters."""

    max_length: int = 500


Value: TypeAlias = Int | Text
# What a handler expects in its tokens: each key's value, or a fixed-length list of values
# (a composite sort key, e.g. (last_name, first_name, id)).
Shape: TypeAlias = Mapping[str, Value | tuple[Value, ...]]


@functools.cache
def page_token_key() -> bytes:
    """The signing key: CLOUDSHELF_PAGE_TOKEN_KEY, or a random key of this process (with a
    warning: tokens then fail on other replicas and after a restart)."""
    configured = os.environ.get(PAGE_TOKEN_KEY_ENV, "").strip()
    if configured:
        if len(configured) < 32:
            log.warning("%s is shorter than 32 characters: use a random key", PAGE_TOKEN_KEY_ENV)
        return configured.encode()
    log.warning(
        "%s is not set: page tokens are signed with a random key of this process, so a "
        "token is refused by other replicas and after a restart; set one shared key",
        PAGE_TOKEN_KEY_ENV,
    )
    return secrets.token_bytes(32)


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mac(payload: bytes) -> bytes:
    return hmac.new(page_token_key(), _CONTEXT + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_page_token(position: dict[str, Any], query: Any) -> str:
    payload = json.dumps({"p": position, "q": _fingerprint(query)}, separators=(",", ":"))
    data = payload.encode()
    return f"{_b64encode(data)}.{_b64encode(_mac(data))}"


def _refuse(problem: str) -> InvalidArgument:
    return InvalidArgument("page_token", problem, reason=INVALID_PAGE_TOKEN)


def decode_page_token(token: str, query: Any, shape: Shape) -> dict[str, Any] | None:
    """The position a token points at, None for the first page; INVALID_ARGUMENT when the
    token is not one this service issued, was issued for another query, or does not hold
    a position of `shape`."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise _refuse("too long to be a token this service issued")
    payload_text, _, mac_text = token.partition(".")
    try:
        payload, mac = _b64decode(payload_text), _b64decode(mac_text)
    except (binascii.Error, ValueError):
        raise _refuse("not a token this service issued") from None
    if not hmac.compare_digest(mac, _mac(payload)):
        raise _refuse("not a token this service issued (or issued with another key)")
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise _refuse("not a token this service issued") from None
    if not isinstance(decoded, dict) or set(decoded) != {"p", "q"}:
        raise _refuse("not a token this service issued")
    if decoded["q"] != _fingerprint(query):
        raise _refuse("belongs to a different query; start without it")
    return _checked_position(decoded["p"], shape)


def _checked_position(position: Any, shape: Shape) -> dict[str, Any]:
    if not isinstance(position, dict) or set(position) != set(shape):
        raise _refuse(f"the position must hold exactly {sorted(shape)}")
    checked: dict[str, Any] = {}
    for key, expected in shape.items():
        value = position[key]
        if isinstance(expected, tuple):
            if not isinstance(value, list) or len(value) != len(expected):
                raise _refuse(f"{key} must be a list of {len(expected)} values")
            checked[key] = [
                _checked_value(f"{key}[{i}]", item, kind)
                for i, (item, kind) in enumerate(zip(value, expected, strict=True))
            ]
        else:
            checked[key] = _checked_value(key, value, expected)
    return checked


def _checked_value(name: str, value: Any, kind: Value) -> Any:
    if isinstance(kind, Int):
        # bool is an int in Python; a token never holds one.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(f"{name} must be an integer")
        if not kind.low <= value <= kind.high:
            raise _refuse(f"{name} must be between {kind.low} and {kind.high}")
        return value
    if not isinstance(value, str):
        raise _refuse(f"{name} must be a string")
    if len(value) > kind.max_length:
        raise _refuse(f"{name} must be at most {kind.max_length} characters")
    problem = control_character_problem(value)
    if problem is not None:
        raise _refuse(f"{name} {problem}")
    return value


def split_page(
    fetched: Sequence[T], size: int, position_of: Callable[[T], dict[str, Any]], query: Any
) -> tuple[Sequence[T], str]:
    """The page and the next page's token from a fetch of up to size + 1 items (one more
    than the page tells whether another page exists); the token is "" on the last page."""
    if len(fetched) <= size:
        return fetched, ""
    return fetched[:size], encode_page_token(position_of(fetched[size - 1]), query)
