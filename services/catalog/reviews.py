"""Reviews in PostgreSQL. A trigger keeps each book's rating_average and rating_count
exact after every insert, edit, delete or moderation (see the schema migration)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.runtime.auth import NOT_OWNER
from cloudshelf.runtime.errors import InvalidArgument, NotFound, PermissionDenied
from cloudshelf.runtime.events import new_event, write_outbox
from services.catalog.constraints import constraint_errors
from services.catalog.outbox import OUTBOX
from services.catalog.validation import (
    REVIEW_STATUSES,
    check_enum,
    check_id,
    check_length,
    check_lookup_id,
    check_rating,
)

_STATUS_ENUM = {name: number for number, name in REVIEW_STATUSES.items()}
EDITABLE_PATHS = ("rating", "title", "content")
# reviews.user_id is VARCHAR(50); Cognito's user ids (sub) are 36-character UUIDs.
MAX_USER_ID = 50


def _check_author(row: asyncpg.Record, author: str | None) -> None:
    if author is not None and row["user_id"] != author:
        raise PermissionDenied(
            "this review is another user's: only its author may change it", reason=NOT_OWNER
        )


def review_from_row(row: asyncpg.Record) -> catalog_pb2.Review:
    review = catalog_pb2.Review(
        id=row["id"],
        book_id=row["book_id"],
        user_id=row["user_id"],
        rating=row["rating"],
        title=row["title"] or "",
        content=row["content"] or "",
        is_verified_purchase=row["is_verified_purchase"],
        helpful_votes=row["helpful_votes"],
        total_votes=row["total_votes"],
        status=_STATUS_ENUM[row["status"]],  # type: ignore[arg-type]
    )
    review.create_time.FromDatetime(row["created_at"])
    review.update_time.FromDatetime(row["updated_at"])
    return review


def review_columns(review: catalog_pb2.Review, paths: Sequence[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for path in paths:
        match path:
            case "rating":
                columns["rating"] = check_rating("review.rating", review.rating)
            case "title":
                columns["title"] = check_length("review.title", review.title, 200)
            case "content":
                columns["content"] = check_length("review.content", review.content, 10_000)
            case _:
                raise InvalidArgument("update_mask", f"{path!r} cannot be updated")
    return columns


class ReviewStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add(self, review: catalog_pb2.Review, author: str) -> catalog_pb2.Review:
        """Adds `review` by `author` (the caller's user id); the request's user_id and
        is_verified_purchase are not read: a purchase is verified from the orders the
        catalog learnt from the storefront's events (services/catalog/purchases.py)."""
        check_id("review.book_id", review.book_id)
        if not 0 < len(author) <= MAX_USER_ID:
            raise InvalidArgument("review", "the caller's user id does not fit a review")
        columns = review_columns(review, EDITABLE_PATHS)
        async with self.pool.acquire() as conn, conn.transaction():
            with constraint_errors():
                row = await conn.fetchrow(
                    "INSERT INTO book_catalog.reviews "
                    "(book_id, user_id, rating, title, content, is_verified_purchase) "
                    "VALUES ($1, $2, $3, $4, $5, EXISTS ("
                    "    SELECT 1 FROM book_catalog.order_purchases p "
                    "    WHERE p.user_id = $2::varchar AND p.book_id = $1::integer "
                    "    AND NOT p.cancelled)) "
                    "RETURNING *",
                    review.book_id,
                    author,
                    columns["rating"],
                    columns["title"],
                    columns["content"],
                )
            added = review_from_row(row)
            event = catalog_pb2.ReviewAddedEvent(review=added)
            await write_outbox(
                conn, OUTBOX, [new_event("review.added", added.id, row["version"], event)]
            )
        return added

    async def _set(
        self, review_id: int, columns: dict[str, Any], moderation: bool, author: str | None
    ) -> catalog_pb2.Review:
        """Writes the columns that differ with a "review.updated" (or, for a status,
        "review.moderated") event; a change to nothing writes neither. With an `author`,
        only that user's review may be changed."""
        check_lookup_id("review.id", review_id, "review")
        if not columns:
            raise InvalidArgument("update_mask", "list the fields to change")
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                "SELECT * FROM book_catalog.reviews WHERE id = $1 FOR UPDATE", review_id
            )
            if old is None:
                raise NotFound(f"no review with id {review_id}")
            _check_author(old, author)
            changed = {name: value for name, value in columns.items() if old[name] != value}
            if not changed:
                return review_from_row(old)
            assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(changed, 2))
            row = await conn.fetchrow(
                f"UPDATE book_catalog.reviews SET {assignments} WHERE id = $1 RETURNING *",
                review_id,
                *changed.values(),
            )
            review = review_from_row(row)
            event: catalog_pb2.ReviewModeratedEvent | catalog_pb2.ReviewUpdatedEvent
            if moderation:
                event = catalog_pb2.ReviewModeratedEvent(
                    review=review,
                    previous_status=_STATUS_ENUM[old["status"]],  # type: ignore[arg-type]
                )
            else:
                event = catalog_pb2.ReviewUpdatedEvent(review=review, changed_fields=list(changed))
            event_type = "review.moderated" if moderation else "review.updated"
            await write_outbox(
                conn, OUTBOX, [new_event(event_type, review_id, row["version"], event)]
            )
        return review

    async def update(
        self, review: catalog_pb2.Review, paths: Sequence[str], author: str
    ) -> catalog_pb2.Review:
        """Changes the review's text or rating; only its author may."""
        return await self._set(review.id, review_columns(review, paths), False, author)

    async def moderate(self, review_id: int, status: int) -> catalog_pb2.Review:
        if status == catalog_pb2.REVIEW_STATUS_UNSPECIFIED:
            raise InvalidArgument("status", "choose published, pending or rejected")
        name = check_enum("status", status, REVIEW_STATUSES, default=None)
        return await self._set(review_id, {"status": name}, True, None)

    async def delete(self, review_id: int, author: str | None) -> int:
        """Deletes a review (with an `author`: only that user's); returns its book's id."""
        check_lookup_id("review_id", review_id, "review")
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                "SELECT user_id FROM book_catalog.reviews WHERE id = $1 FOR UPDATE", review_id
            )
            if old is None:
                raise NotFound(f"no review with id {review_id}")
            _check_author(old, author)
            row = await conn.fetchrow(
                "DELETE FROM book_catalog.reviews WHERE id = $1 RETURNING book_id, version",
                review_id,
            )
            # The deletion is the review's newest state: one version past its last.
            event = catalog_pb2.ReviewDeletedEvent(review_id=review_id, book_id=row["book_id"])
            await write_outbox(
                conn, OUTBOX, [new_event("review.deleted", review_id, row["version"] + 1, event)]
            )
        return int(row["book_id"])

    async def list(
        self, book_id: int, status: int, before_id: int | None, limit: int
    ) -> list[catalog_pb2.Review]:
        check_lookup_id("book_id", book_id, "book")
        name = check_enum("status", status, REVIEW_STATUSES, default="published")
        exists = await self.pool.fetchval("SELECT 1 FROM book_catalog.books WHERE id = $1", book_id)
        if not exists:
            raise NotFound(f"no book with id {book_id}")
        rows = await self.pool.fetch(
            "SELECT * FROM book_catalog.reviews WHERE book_id = $1 AND status = $2 "
            "AND id < $3 ORDER BY id DESC LIMIT $4",
            book_id,
            name,
            before_id or 2**31 - 1,
            limit,
        )
        return [review_from_row(row) for row in rows]
