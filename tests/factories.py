"""Unique, valid test data, so tests sharing one stack never collide."""

from __future__ import annotations

import itertools
import random
import secrets
from typing import Any

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2

_counter = itertools.count(random.randrange(10**6))
_LETTERS = "bcdfghjklmnpqrstvwxz"


def isbn13() -> str:
    body = f"979{next(_counter) % 10**9:09d}"
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def isbn10() -> str:
    body = f"{next(_counter) % 10**9:09d}"
    check = (11 - sum(int(d) * (10 - i) for i, d in enumerate(body)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


def word() -> str:
    """A made-up word no other test uses: scopes full-text searches to one test."""
    return "".join(secrets.choice(_LETTERS) for _ in range(10))


def usd(minor_units: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency_code="USD")


def book(title: str | None = None, **fields: Any) -> catalog_pb2.Book:
    values: dict[str, object] = {
        "isbn_13": isbn13(),
        "title": title or f"The {word()} book",
        "price": usd(1999),
        "format": catalog_pb2.BOOK_FORMAT_PAPERBACK,
        "language_code": "en",
    }
    values.update(fields)
    return catalog_pb2.Book(**values)  # type: ignore[arg-type]
