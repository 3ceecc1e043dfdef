"""PostgreSQL constraint violations of the catalog schema, as errors a caller can act on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg

from cloudshelf.runtime.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

# Built on use: an exception instance must not be raised twice.
_BY_CONSTRAINT: dict[str, Callable[[], DomainError]] = {
    "books_isbn_13_key": lambda: AlreadyExists("a book with this isbn_13 already exists"),
    "books_isbn_10_key": lambda: AlreadyExists("a book with this isbn_10 already exists"),
    "books_slug_key": lambda: AlreadyExists("a book with this slug already exists"),
    "books_category_id_fkey": lambda: NotFound("book.category_id: no such category"),
    "books_publisher_id_fkey": lambda: NotFound("book.publisher_id: no such publisher"),
    "books_series_id_fkey": lambda: NotFound("book.series_id: no such series"),
    "books_list_price_check": lambda: InvalidArgument("book.list_price", "must be >= price"),
    "books_isbn_check": lambda: InvalidArgument("book", "needs an isbn_13 or an isbn_10"),
    "books_stock_quantity_check": lambda: FailedPrecondition("stock would become negative"),
    "book_authors_pkey": lambda: InvalidArgument(
        "book.authors", "an author is listed twice in one role"
    ),
    "book_authors_book_id_order_index_key": lambda: InvalidArgument(
        "book.authors", "two authors share an order_index"
    ),
    "book_authors_author_id_fkey": lambda: NotFound("book.authors: no such author"),
    "categories_name_key": lambda: AlreadyExists("a category with this name already exists"),
    "categories_slug_key": lambda: AlreadyExists("a category with this slug already exists"),
    "categories_parent_category_id_fkey": lambda: NotFound(
        "category.parent_category_id: no such category"
    ),
    "categories_not_own_parent": lambda: InvalidArgument(
        "category.parent_category_id", "a category cannot be its own parent"
    ),
    "publishers_name_key": lambda: AlreadyExists("a publisher with this name already exists"),
    "reviews_book_id_user_id_key": lambda: AlreadyExists("this user already reviewed this book"),
    "reviews_book_id_fkey": lambda: NotFound("review.book_id: no such book"),
}


@contextmanager
def constraint_errors() -> Iterator[None]:
    """Turns a violated constraint into its domain error (the transaction rolls back)."""
    try:
        yield
    except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
        name = getattr(exc, "constraint_name", None) or ""
        error = _BY_CONSTRAINT.get(name)
        if error is None:
            raise InvalidArgument("request", f"violates {name or 'a constraint'}") from exc
        raise error() from exc
