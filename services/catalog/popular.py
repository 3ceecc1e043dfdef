"""Popular books from the materialized view, and its refresh job."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2
from services.catalog.validation import decimal_to_money


async def popular_books(
    pool: asyncpg.Pool, category_ids: list[int] | None, limit: int
) -> tuple[list[catalog_pb2.PopularBook], datetime | None]:
    """Best sellers overall, or within the given categories (a category and its subtree)."""
    if category_ids is None:
        rows = await pool.fetch(
            "SELECT * FROM book_catalog.popular_books ORDER BY rank_overall LIMIT $1", limit
        )
    else:
        rows = await pool.fetch(
            "SELECT * FROM book_catalog.popular_books WHERE category_id = ANY($1::int[]) "
            "ORDER BY purchase_count DESC, rating_average DESC, id LIMIT $2",
            category_ids,
            limit,
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
        for position, row in enumerate(rows, start=1)
    ]
    refreshed = rows[0]["refreshed_at"] if rows else None
    return books, refreshed


async def refresh_popular_books(pool: asyncpg.Pool) -> None:
    """Recomputes the view without blocking readers (needs its unique index on id)."""
    await pool.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY book_catalog.popular_books")
