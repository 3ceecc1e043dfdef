"""Books in PostgreSQL: reading, writing (with outbox events), inventory, views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from cloudshelf.runtime.events import Event, new_event, write_outbox
from cloudshelf.runtime.idempotency import IdempotencyKeys, IdempotentCall, PostgresIdempotencyKeys
from services.catalog.constraints import constraint_errors
from services.catalog.outbox import OUTBOX
from services.catalog.validation import (
    FORMATS,
    ROLES,
    STATUSES,
    check_date,
    check_enum,
    check_id,
    check_isbn10,
    check_isbn13,
    check_language,
    check_length,
    check_slug,
    check_title,
    decimal_to_money,
    money_to_decimal,
    slugify,
)

IDEMPOTENCY_KEYS = "book_catalog.idempotency_keys"

# The authors of a book, in order, as JSON (decoded to a list by the pool's codec).
_AUTHORS_JSON = """
coalesce((SELECT json_agg(json_build_object(
                 'author_id', ba.author_id, 'role', ba.role, 'order_index', ba.order_index,
                 'name', a.first_name || ' ' || a.last_name) ORDER BY ba.order_index)
            FROM book_catalog.book_authors ba
            JOIN book_catalog.authors a ON a.id = ba.author_id
           WHERE ba.book_id = b.id), '[]'::json)"""

# Views are counted in the narrow book_stats table (a view never rewrites the books row);
# books.view_count keeps the counts from before that table.
_VIEW_COUNT = """
(b.view_count + coalesce((SELECT s.view_count FROM book_catalog.book_stats s
                           WHERE s.book_id = b.id), 0))"""

BOOK_COLUMNS = f"""
b.id, b.isbn_13, b.isbn_10, b.title, b.subtitle, b.description, b.price, b.list_price,
b.page_count, b.publication_date, b.language_code, b.format, b.category_id, b.publisher_id,
b.stock_quantity, b.status, b.slug, b.cover_image_url, b.thumbnail_url, b.series_id,
b.series_number, {_VIEW_COUNT} AS view_count, b.purchase_count, b.rating_average,
b.rating_count, b.created_at, b.updated_at, b.version, {_AUTHORS_JSON} AS authors"""

_FORMAT_ENUM = {name: number for number, name in FORMATS.items()}
_STATUS_ENUM = {name: number for number, name in STATUSES.items()}
_ROLE_ENUM = {name: number for number, name in ROLES.items()}

# UpdateBook mask paths and the columns they write ("authors" rewrites book_authors).
UPDATABLE_PATHS = frozenset(
    {
        "isbn_13",
        "isbn_10",
        "title",
        "subtitle",
        "description",
        "price",
        "list_price",
        "page_count",
        "publication_date",
        "language_code",
        "format",
        "category_id",
        "publisher_id",
        "status",
        "slug",
        "cover_image_url",
        "thumbnail_url",
        "authors",
        "series_id",
        "series_number",
    }
)
_NOT_BY_UPDATE = {"stock_quantity": "change stock with AdjustInventory"}


@dataclass(frozen=True)
class BookAuthorLink:
    author_id: int
    role: str
    order_index: int


def book_from_row(row: asyncpg.Record) -> catalog_pb2.Book:
    book = catalog_pb2.Book(
        id=row["id"],
        isbn_13=row["isbn_13"] or "",
        isbn_10=row["isbn_10"] or "",
        title=row["title"],
        subtitle=row["subtitle"] or "",
        description=row["description"] or "",
        page_count=row["page_count"] or 0,
        language_code=row["language_code"],
        format=_FORMAT_ENUM.get(row["format"], 0),  # type: ignore[arg-type]
        category_id=row["category_id"] or 0,
        publisher_id=row["publisher_id"] or 0,
        stock_quantity=row["stock_quantity"],
        status=_STATUS_ENUM[row["status"]],  # type: ignore[arg-type]
        slug=row["slug"] or "",
        cover_image_url=row["cover_image_url"] or "",
        thumbnail_url=row["thumbnail_url"] or "",
        series_id=row["series_id"] or 0,
        series_number=row["series_number"] or 0,
        view_count=row["view_count"],
        purchase_count=row["purchase_count"],
        rating_average=float(row["rating_average"]),
        rating_count=row["rating_count"],
    )
    book.price.CopyFrom(decimal_to_money(row["price"]))
    if row["list_price"] is not None:
        book.list_price.CopyFrom(decimal_to_money(row["list_price"]))
    published: date | None = row["publication_date"]
    if published is not None:
        book.publication_date.year = published.year
        book.publication_date.month = published.month
        book.publication_date.day = published.day
    for link in row["authors"]:
        book.authors.add(
            author_id=link["author_id"],
            role=_ROLE_ENUM[link["role"]],  # type: ignore[arg-type]
            order_index=link["order_index"],
            display_name=link["name"],
        )
    book.create_time.FromDatetime(row["created_at"])
    book.update_time.FromDatetime(row["updated_at"])
    return book


def _book_value(book: catalog_pb2.Book, path: str) -> Any:
    """The validated column value of one Book field."""
    match path:
        case "isbn_13":
            return check_isbn13("book.isbn_13", book.isbn_13) if book.isbn_13 else None
        case "isbn_10":
            return check_isbn10("book.isbn_10", book.isbn_10) if book.isbn_10 else None
        case "title":
            return check_title("book.title", book.title)
        case "subtitle":
            return check_length("book.subtitle", book.subtitle, 500)
        case "description":
            return check_length("book.description", book.description, 20_000)
        case "price":
            if not book.HasField("price"):
                raise InvalidArgument("book.price", "is required")
            return money_to_decimal("book.price", book.price)
        case "list_price":
            if not book.HasField("list_price"):
                return None
            return money_to_decimal("book.list_price", book.list_price)
        case "page_count":
            if book.page_count < 0:
                raise InvalidArgument("book.page_count", "must be > 0")
            return book.page_count or None
        case "publication_date":
            return check_date("book.publication_date", book.publication_date)
        case "language_code":
            return check_language("book.language_code", book.language_code)
        case "format":
            return check_enum("book.format", book.format, FORMATS, default=None)
        case "status":
            return check_enum("book.status", book.status, STATUSES, default="active")
        case "category_id" | "publisher_id" | "series_id":
            value = getattr(book, path)
            return check_id(f"book.{path}", value) if value else None
        case "series_number":
            if book.series_number < 0:
                raise InvalidArgument("book.series_number", "must be > 0")
            return book.series_number or None
        case "slug":
            return check_slug("book.slug", book.slug) if book.slug else None
        case "cover_image_url" | "thumbnail_url":
            return check_length(f"book.{path}", getattr(book, path), 500)
    raise InvalidArgument("update_mask", f"unknown path {path!r}")


def author_links(book: catalog_pb2.Book) -> list[BookAuthorLink]:
    links = []
    for position, author in enumerate(book.authors, start=1):
        field = f"book.authors[{position - 1}]"
        check_id(f"{field}.author_id", author.author_id)
        role = check_enum(f"{field}.role", author.role, ROLES, default="author")
        assert role is not None
        if author.order_index < 0:
            raise InvalidArgument(f"{field}.order_index", "must be > 0")
        links.append(BookAuthorLink(author.author_id, role, author.order_index or position))
    return links


def columns_for_create(book: catalog_pb2.Book) -> dict[str, Any]:
    columns = {path: _book_value(book, path) for path in UPDATABLE_PATHS if path != "authors"}
    if columns["isbn_13"] is None and columns["isbn_10"] is None:
        raise InvalidArgument("book.isbn_13", "an isbn_13 or an isbn_10 is required")
    if columns["list_price"] is not None and columns["list_price"] < columns["price"]:
        raise InvalidArgument("book.list_price", "must be >= price")
    if columns["slug"] is None:
        columns["slug"] = slugify(f"{columns['title']} {columns['isbn_13'] or columns['isbn_10']}")
    return columns


def columns_for_update(book: catalog_pb2.Book, paths: Sequence[str]) -> dict[str, Any]:
    if not paths:
        raise InvalidArgument("update_mask", "list the fields to change, e.g. 'price'")
    columns = {}
    for path in paths:
        if path in _NOT_BY_UPDATE:
            raise InvalidArgument("update_mask", f"{path!r}: {_NOT_BY_UPDATE[path]}")
        if path not in UPDATABLE_PATHS:
            raise InvalidArgument("update_mask", f"{path!r} cannot be updated")
        if path != "authors":
            columns[path] = _book_value(book, path)
    if (
        "isbn_13" in columns
        and "isbn_10" in columns
        and not (columns["isbn_13"] or columns["isbn_10"])
    ):
        raise InvalidArgument("book.isbn_13", "an isbn_13 or an isbn_10 is required")
    return columns


async def _link_authors(
    conn: asyncpg.Connection, book_id: int, links: list[BookAuthorLink]
) -> None:
    await conn.execute("DELETE FROM book_catalog.book_authors WHERE book_id = $1", book_id)
    if links:
        await conn.executemany(
            "INSERT INTO book_catalog.book_authors (book_id, author_id, role, order_index) "
            "VALUES ($1, $2, $3, $4)",
            [(book_id, link.author_id, link.role, link.order_index) for link in links],
        )


async def _locked_book(conn: asyncpg.Connection, book_id: int) -> asyncpg.Record:
    """The book's row (BOOK_COLUMNS, with its version), locked until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {BOOK_COLUMNS} FROM book_catalog.books b WHERE b.id = $1 FOR UPDATE OF b",
        book_id,
    )
    if row is None:
        raise NotFound(f"no book with id {book_id}")
    return row


class BookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.idempotency_keys: IdempotencyKeys[asyncpg.Connection] = PostgresIdempotencyKeys(
            IDEMPOTENCY_KEYS
        )

    async def fetch(self, where: str, *args: Any) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                f"SELECT {BOOK_COLUMNS} FROM book_catalog.books b WHERE {where}", *args
            )
        )

    async def get(self, column: str, value: Any) -> catalog_pb2.Book:
        rows = await self.fetch(f"b.{column} = $1", value)
        if not rows:
            raise NotFound(f"no book with {column} {value}")
        return book_from_row(rows[0])

    async def get_many(self, ids: Sequence[int]) -> dict[int, catalog_pb2.Book]:
        return {i: book for i, (book, _) in (await self.get_many_versioned(ids)).items()}

    async def get_versioned(self, column: str, value: Any) -> tuple[catalog_pb2.Book, int]:
        """A book and the version of the row it was read from (what the cache stores)."""
        rows = await self.fetch(f"b.{column} = $1", value)
        if not rows:
            raise NotFound(f"no book with {column} {value}")
        return book_from_row(rows[0]), int(rows[0]["version"])

    async def get_many_versioned(
        self, ids: Sequence[int]
    ) -> dict[int, tuple[catalog_pb2.Book, int]]:
        rows = await self.fetch("b.id = ANY($1::int[])", list(ids))
        return {row["id"]: (book_from_row(row), int(row["version"])) for row in rows}

    async def list_in_categories(
        self, category_ids: list[int] | None, after_id: int, limit: int, *, active_only: bool
    ) -> list[catalog_pb2.Book]:
        conditions = ["b.id > $1"]
        args: list[Any] = [after_id]
        if active_only:  # also what lets the partial index idx_books_category serve it
            conditions.append("b.status = 'active'")
        if category_ids is not None:
            args.append(category_ids)
            conditions.append(f"b.category_id = ANY(${len(args)}::int[])")
        args.append(limit)
        rows = await self.fetch(
            f"{' AND '.join(conditions)} ORDER BY b.id LIMIT ${len(args)}", *args
        )
        return [book_from_row(row) for row in rows]

    async def create(self, columns: dict[str, Any], links: list[BookAuthorLink]) -> int:
        names = list(columns)
        placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        async with self.pool.acquire() as conn, conn.transaction():
            with constraint_errors():
                book_id: int = await conn.fetchval(
                    f"INSERT INTO book_catalog.books ({', '.join(names)}) "
                    f"VALUES ({placeholders}) RETURNING id",
                    *columns.values(),
                )
                await _link_authors(conn, book_id, links)
            # Read back at the end: linking authors updates the row (and its version) too.
            created = await _locked_book(conn, book_id)
            event = catalog_pb2.BookCreatedEvent(book=book_from_row(created))
            await write_outbox(
                conn, OUTBOX, [new_event("book.created", book_id, created["version"], event)]
            )
        return book_id

    async def update(
        self, book_id: int, columns: dict[str, Any], links: list[BookAuthorLink] | None
    ) -> list[str]:
        """Writes the given columns (and authors); returns the fields that changed."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await _locked_book(conn, book_id)
            changed = [name for name, value in columns.items() if old[name] != value]
            with constraint_errors():
                if changed:
                    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(changed, 2))
                    await conn.execute(
                        f"UPDATE book_catalog.books SET {assignments} WHERE id = $1",
                        book_id,
                        *(columns[name] for name in changed),
                    )
                if links is not None:
                    old_links = [
                        (a["author_id"], a["role"], a["order_index"]) for a in old["authors"]
                    ]
                    if old_links != [(x.author_id, x.role, x.order_index) for x in links]:
                        await _link_authors(conn, book_id, links)
                        changed.append("authors")
            if changed:
                new = await _locked_book(conn, book_id)
                event = catalog_pb2.BookUpdatedEvent(
                    book_id=book_id,
                    changed_fields=changed,
                    price_changed="price" in changed,
                    before=book_from_row(old),
                    after=book_from_row(new),
                )
                await write_outbox(
                    conn, OUTBOX, [new_event("book.updated", book_id, new["version"], event)]
                )
        return changed

    async def adjust_inventory(
        self, deltas: dict[int, tuple[int, int]], idempotent: IdempotentCall | None
    ) -> catalog_pb2.AdjustInventoryResponse:
        """Applies {book_id: (delta, purchased)} all or nothing; returns new stock levels.

        Rows are locked in id order (no deadlocks between concurrent batches), checked,
        then updated: stock never goes negative, and the book that would is named.
        With a key, a retry gets the first response again and changes nothing.
        """
        ids = sorted(deltas)
        async with self.pool.acquire() as conn, conn.transaction():
            if idempotent:
                # First, before any book lock: a concurrent retry waits here for our outcome.
                earlier = await self.idempotency_keys.claim(conn, idempotent)
                if earlier is not None:
                    return catalog_pb2.AdjustInventoryResponse.FromString(earlier)
            rows = await conn.fetch(
                "SELECT id, stock_quantity FROM book_catalog.books "
                "WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE",
                ids,
            )
            stock = {row["id"]: row["stock_quantity"] for row in rows}
            for book_id in ids:
                if book_id not in stock:
                    raise NotFound(f"no book with id {book_id}")
                delta = deltas[book_id][0]
                if stock[book_id] + delta < 0:
                    raise FailedPrecondition(
                        f"book {book_id}: {stock[book_id]} in stock, cannot remove {-delta}",
                        reason="INSUFFICIENT_STOCK",
                        metadata={"book_id": str(book_id)},
                    )
            updated = await conn.fetch(
                "UPDATE book_catalog.books b "
                "SET stock_quantity = b.stock_quantity + d.delta, "
                "    purchase_count = b.purchase_count + d.purchased "
                "FROM unnest($1::int[], $2::int[], $3::int[]) AS d(id, delta, purchased) "
                "WHERE b.id = d.id RETURNING b.id, b.stock_quantity, b.version",
                ids,
                [deltas[i][0] for i in ids],
                [deltas[i][1] for i in ids],
            )
            levels = sorted((row["id"], row["stock_quantity"]) for row in updated)
            versions = {row["id"]: row["version"] for row in updated}
            events: list[Event] = [
                new_event(
                    "inventory.adjusted",
                    book_id,
                    versions[book_id],
                    catalog_pb2.InventoryAdjustedEvent(
                        book_id=book_id,
                        delta=deltas[book_id][0],
                        stock_quantity=level,
                        purchased=deltas[book_id][1],
                    ),
                )
                for book_id, level in levels
            ]
            await write_outbox(conn, OUTBOX, events)
            response = catalog_pb2.AdjustInventoryResponse(
                stock_levels=[
                    catalog_pb2.StockLevel(book_id=b, stock_quantity=s) for b, s in levels
                ]
            )
            if idempotent:
                await self.idempotency_keys.complete(conn, idempotent, response)
        return response

    async def record_view(self, book_id: int) -> int:
        """Counts a view in book_stats (the books row is not touched: no new row version,
        no index entry, the search index untouched); returns the book's view count."""
        count = await self.pool.fetchval(
            """
            WITH book AS (SELECT id, view_count FROM book_catalog.books WHERE id = $1),
            counted AS (
                INSERT INTO book_catalog.book_stats AS s (book_id, view_count)
                SELECT id, 1 FROM book
                ON CONFLICT (book_id) DO UPDATE SET view_count = s.view_count + 1
                RETURNING s.view_count
            )
            SELECT book.view_count + counted.view_count FROM book, counted""",
            book_id,
        )
        if count is None:
            raise NotFound(f"no book with id {book_id}")
        return int(count)
