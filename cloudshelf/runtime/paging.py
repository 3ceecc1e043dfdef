"""Opaque page tokens.

A token carries where the next page starts plus a fingerprint of the query it belongs to,
so a token replayed with other filters is refused instead of returning a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cloudshelf.runtime.errors import InvalidArgument

T = TypeVar("T")


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_page_token(position: dict[str, Any], query: Any) -> str:
    payload = {"p": position, "q": _fingerprint(query)}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def decode_page_token(token: str, query: Any) -> dict[str, Any] | None:
    """The position a token points at, None for the first page; INVALID_ARGUMENT when the
    token is malformed or was issued for another query."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, fingerprint = payload["p"], payload["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token", "not a token this service issued") from None
    if fingerprint != _fingerprint(query) or not isinstance(position, dict):
        raise InvalidArgument("page_token", "belongs to a different query; start without it")
    return position


def split_page(
    fetched: Sequence[T], size: int, position_of: Callable[[T], dict[str, Any]], query: Any
) -> tuple[Sequence[T], str]:
    """The page and the next page's token from a fetch of up to size + 1 items (one more
    than the page tells whether another page exists); the token is "" on the last page."""
    if len(fetched) <= size:
        return fetched, ""
    return fetched[:size], encode_page_token(position_of(fetched[size - 1]), query)
