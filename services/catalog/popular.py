"""Popular books from the materialized view, and its refresh job."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2
from services.catalog.validation import decimal_to_money


async def popular_books(
    pool: asyncpg.Pool, category_ids: list[int] | None, limit: int
) -> tuple[list[catalog_pb2.PopularBook], datetime | None]:
    """Best sellers overall, or within the given categories (a category and its subtree),
    and when the view was last refreshed."""
    # The refresh time is one row beside the view: LEFT JOIN LATERAL returns it even when
    # the view is empty (one row of NULL book columns then).
    if category_ids is None:
        ranked = "SELECT * FROM book_catalog.popular_books ORDER BY rank_overall LIMIT $1"
        args: tuple[object, ...] = (limit,)
    else:
        ranked = (
            "SELECT * FROM book_catalog.popular_books WHERE category_id = ANY($2::int[]) "
            "ORDER BY purchase_count DESC, rating_average DESC, id LIMIT $1"
        )
        args = (limit, category_ids)
    rows = await pool.fetch(
        "SELECT r.refreshed_at, p.* FROM book_catalog.popular_books_refresh r "
        f"LEFT JOIN LATERAL ({ranked}) p ON true",
        *args,
    )
    books = [
        catalog_pb2.PopularBook(
            book_id=row["id"],
            title=row["title"],
            price=decimal_to_money(row["price"]),
            cover_image_url=row["cover_image_url"] or "",
            rating_average=float(row["rating_average"]),
            purchase_count=row["purchase_count"],
            category_name=row["category_name"],
            rank=position,
        )
        for position, row in enumerate((r for r in rows if r["id"] is not None), start=1)
    ]
    refreshed: datetime | None = rows[0]["refreshed_at"] if rows else None
    return books, refreshed


async def refresh_popular_books(pool: asyncpg.Pool) -> None:
    """Recomputes the view without blocking readers (needs its unique index on id).

    CONCURRENTLY compares old and new rows and writes only the differences, so a refresh
    with nothing changed rewrites no row; the time is kept in popular_books_refresh,
    updated in the same transaction (readers never see one without the other)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY book_catalog.popular_books")
        await conn.execute("UPDATE book_catalog.popular_books_refresh SET refreshed_at = now()")
        # SuggestBooks ranks by the same signals; its triggers keep only the texts current.
        await conn.execute("SELECT book_catalog.refresh_suggestion_popularity()")
