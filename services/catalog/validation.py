"""Request validation for the catalog (the seed's constraints and data-quality rules).

Every failure is an InvalidArgument naming the field, e.g. "book.isbn_13: check digit is 4".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.errors import InvalidArgument, NotFound
from cloudshelf.runtime.validation import check_text

CATALOG_CURRENCY = "USD"
# The seed's data-quality rule: price < 10,000.
MAX_PRICE_MINOR = 1_000_000
MAX_TITLE = 500
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
# Ids are int64 in the contract and INTEGER (SERIAL) columns in the store.
MAX_ID = 2**31 - 1
# Stock, counts and other INTEGER columns.
MAX_INT32 = 2**31 - 1

FORMATS = {
    catalog_pb2.BOOK_FORMAT_HARDCOVER: "hardcover",
    catalog_pb2.BOOK_FORMAT_PAPERBACK: "paperback",
    catalog_pb2.BOOK_FORMAT_EBOOK: "ebook",
    catalog_pb2.BOOK_FORMAT_AUDIOBOOK: "audiobook",
}
STATUSES = {
    catalog_pb2.BOOK_STATUS_ACTIVE: "active",
    catalog_pb2.BOOK_STATUS_INACTIVE: "inactive",
    catalog_pb2.BOOK_STATUS_DISCONTINUED: "discontinued",
}
ROLES = {
    catalog_pb2.AUTHOR_ROLE_AUTHOR: "author",
    catalog_pb2.AUTHOR_ROLE_CO_AUTHOR: "co-author",
    catalog_pb2.AUTHOR_ROLE_EDITOR: "editor",
    catalog_pb2.AUTHOR_ROLE_TRANSLATOR: "translator",
}
REVIEW_STATUSES = {
    catalog_pb2.REVIEW_STATUS_PUBLISHED: "published",
    catalog_pb2.REVIEW_STATUS_PENDING: "pending",
    catalog_pb2.REVIEW_STATUS_REJECTED: "rejected",
}

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# At most 10 characters: the column's width.
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,6})?")


def normalize_isbn(raw: str) -> str:
    return raw.replace("-", "").replace(" ", "").upper()


def isbn13_check_digit(first12: str) -> str:
    """The check digit of an ISBN-13 given its first 12 digits (weights 1, 3, 1, ...)."""
    if len(first12) != 12 or not (first12.isascii() and first12.isdigit()):
        raise ValueError(f"an ISBN-13 body is 12 digits, got {first12!r}")
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


def isbn10_check_digit(first9: str) -> str:
    """The check digit of an ISBN-10 given its first 9 digits ('X' stands for 10)."""
    if len(first9) != 9 or not (first9.isascii() and first9.isdigit()):
        raise ValueError(f"an ISBN-10 body is 9 digits, got {first9!r}")
    check = (11 - sum(int(d) * (10 - i) for i, d in enumerate(first9)) % 11) % 11
    return "X" if check == 10 else str(check)


def isbn13_problem(isbn: str) -> str | None:
    """Why `isbn` (normalized) is not a valid ISBN-13, or None."""
    if not re.fullmatch(r"[0-9]{13}", isbn):
        return "must be 13 digits"
    expected = isbn13_check_digit(isbn[:12])
    return None if isbn[12] == expected else f"check digit should be {expected}"


def isbn10_problem(isbn: str) -> str | None:
    """Why `isbn` (normalized) is not a valid ISBN-10, or None."""
    if not re.fullmatch(r"[0-9]{9}[0-9X]", isbn):
        return "must be 9 digits and a digit or X"
    expected = isbn10_check_digit(isbn[:9])
    return None if isbn[9] == expected else f"check digit should be {expected}"


def check_isbn13(field: str, raw: str) -> str:
    isbn = normalize_isbn(raw)
    problem = isbn13_problem(isbn)
    if problem:
        raise InvalidArgument(field, problem)
    return isbn


def check_isbn10(field: str, raw: str) -> str:
    isbn = normalize_isbn(raw)
    problem = isbn10_problem(isbn)
    if problem:
        raise InvalidArgument(field, problem)
    return isbn


def money_to_decimal(field: str, money: common_pb2.Money) -> Decimal:
    if money.currency_code not in ("", CATALOG_CURRENCY):
        raise InvalidArgument(f"{field}.currency_code", f"the catalog prices in {CATALOG_CURRENCY}")
    if money.minor_units < 0:
        raise InvalidArgument(field, "must be >= 0")
    if money.minor_units >= MAX_PRICE_MINOR:
        raise InvalidArgument(field, "must be < 10000.00")
    return Decimal(money.minor_units).scaleb(-2)


def decimal_to_money(amount: Decimal) -> common_pb2.Money:
    return common_pb2.Money(minor_units=int(amount * 100), currency_code=CATALOG_CURRENCY)


def check_title(field: str, title: str) -> str:
    title = check_text(field, title).strip()
    if len(title) > MAX_TITLE:
        raise InvalidArgument(field, f"must be at most {MAX_TITLE} characters")
    if not title:
        raise InvalidArgument(field, "must not be empty")
    return title


def check_length(field: str, value: str, limit: int) -> str | None:
    """An optional text: stripped, at most `limit` characters, None when empty."""
    value = check_text(field, value).strip()
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters")
    return value or None


def check_date(field: str, value: common_pb2.Date) -> date | None:
    if value.year == value.month == value.day == 0:
        return None
    try:
        return date(value.year, value.month, value.day)
    except ValueError as exc:
        raise InvalidArgument(field, f"not a calendar date ({exc})") from None


def check_enum(
    field: str, value: int, names: Mapping[Any, str], *, default: str | None
) -> str | None:
    if value == 0:
        return default
    if value not in names:
        raise InvalidArgument(field, f"unknown value {value}")
    return names[value]


def check_slug(field: str, slug: str) -> str:
    if len(slug) > 500 or not _SLUG.fullmatch(slug):
        raise InvalidArgument(field, "lower-case letters, digits and single hyphens only")
    return slug


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:400] or "book"


def check_language(field: str, value: str) -> str:
    value = value.strip() or "en"
    if not _LANGUAGE.fullmatch(value):
        raise InvalidArgument(field, "an ISO 639 code such as 'en' or 'pt-BR'")
    return value


def check_rating(field: str, rating: int) -> int:
    if not 1 <= rating <= 5:
        raise InvalidArgument(field, "must be between 1 and 5")
    return rating


def check_id(field: str, value: int) -> int:
    """An id the request refers to (e.g. book.category_id): INVALID_ARGUMENT outside
    1..MAX_ID."""
    if value <= 0:
        raise InvalidArgument(field, "must be a positive id")
    if value > MAX_ID:
        raise InvalidArgument(field, f"must be at most {MAX_ID}: no such id exists")
    return value


def check_lookup_id(field: str, value: int, entity: str) -> int:
    """The id of the entity a request looks up or acts on: INVALID_ARGUMENT when not
    positive, NOT_FOUND above MAX_ID (no such entity can exist), as for any unknown id."""
    if value > MAX_ID:
        raise NotFound(f"no {entity} with id {value}")
    return check_id(field, value)


def refuse_output_only_book_fields(book: catalog_pb2.Book) -> None:
    """CreateBook refuses what it would otherwise drop, so a caller never believes it set
    a value the catalog ignored."""
    if book.stock_quantity:
        raise InvalidArgument(
            "book.stock_quantity",
            "a new book starts with no stock: add stock with AdjustInventory once it exists",
        )
    if book.id:
        raise InvalidArgument("book.id", "the catalog assigns ids; leave it unset")
    for name in ("view_count", "purchase_count", "rating_average", "rating_count"):
        if getattr(book, name):
            raise InvalidArgument(f"book.{name}", "output only, computed by the catalog")
    if book.HasField("create_time"):
        raise InvalidArgument("book.create_time", "output only, set by the catalog")
    if book.HasField("update_time"):
        raise InvalidArgument("book.update_time", "output only, set by the catalog")
    for i, author in enumerate(book.authors):
        if author.display_name:
            raise InvalidArgument(
                f"book.authors[{i}].display_name", "output only, from the author's name"
            )


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must be >= 0")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
