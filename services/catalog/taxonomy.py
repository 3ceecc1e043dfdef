"""Categories (a tree), authors and publishers in PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from google.protobuf.message import Message

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.runtime.errors import InvalidArgument, NotFound
from cloudshelf.runtime.events import new_event, write_outbox
from services.catalog.constraints import constraint_errors
from services.catalog.outbox import OUTBOX
from services.catalog.validation import (
    check_date,
    check_id,
    check_length,
    check_lookup_id,
    check_slug,
    slugify,
)

# Parent changes take this lock so two concurrent moves cannot close a cycle together.
_CATEGORY_TREE_LOCK = 0x63617465  # "cate"

_DESCENDANTS = """
WITH RECURSIVE tree AS (
    SELECT id FROM book_catalog.categories WHERE id = $1
    UNION
    SELECT c.id FROM book_catalog.categories c JOIN tree t ON c.parent_category_id = t.id
)
SELECT id FROM tree"""


def _required(field: str, value: str, limit: int) -> str:
    checked = check_length(field, value, limit)
    if checked is None:
        raise InvalidArgument(field, "must not be empty")
    return checked


def category_from_row(row: asyncpg.Record) -> catalog_pb2.Category:
    category = catalog_pb2.Category(
        id=row["id"],
        name=row["name"],
        description=row["description"] or "",
        parent_category_id=row["parent_category_id"] or 0,
        slug=row["slug"],
        is_active=row["is_active"],
    )
    category.create_time.FromDatetime(row["created_at"])
    category.update_time.FromDatetime(row["updated_at"])
    return category


def author_from_row(row: asyncpg.Record) -> catalog_pb2.Author:
    author = catalog_pb2.Author(
        id=row["id"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        bio=row["bio"] or "",
        nationality=row["nationality"] or "",
        website_url=row["website_url"] or "",
    )
    if row["birth_date"] is not None:
        born = row["birth_date"]
        author.birth_date.year, author.birth_date.month, author.birth_date.day = (
            born.year,
            born.month,
            born.day,
        )
    author.create_time.FromDatetime(row["created_at"])
    author.update_time.FromDatetime(row["updated_at"])
    return author


def publisher_from_row(row: asyncpg.Record) -> catalog_pb2.Publisher:
    publisher = catalog_pb2.Publisher(
        id=row["id"],
        name=row["name"],
        description=row["description"] or "",
        website_url=row["website_url"] or "",
        country=row["country"] or "",
        established_year=row["established_year"] or 0,
    )
    publisher.create_time.FromDatetime(row["created_at"])
    publisher.update_time.FromDatetime(row["updated_at"])
    return publisher


def category_columns(category: catalog_pb2.Category, paths: Sequence[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for path in paths:
        match path:
            case "name":
                columns["name"] = _required("category.name", category.name, 100)
            case "description":
                columns["description"] = check_length(
                    "category.description", category.description, 5000
                )
            case "slug":
                columns["slug"] = (
                    check_slug("category.slug", category.slug) if category.slug else None
                )
            case "parent_category_id":
                parent = category.parent_category_id
                columns["parent_category_id"] = (
                    check_id("category.parent_category_id", parent) if parent else None
                )
            case "is_active":
                columns["is_active"] = category.is_active
            case _:
                raise InvalidArgument("update_mask", f"{path!r} cannot be updated")
    if "slug" in columns and columns["slug"] is None:
        if "name" not in columns:
            raise InvalidArgument("category.slug", "must not be empty")
        columns["slug"] = slugify(columns["name"])[:100]
    return columns


def author_columns(author: catalog_pb2.Author, paths: Sequence[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for path in paths:
        match path:
            case "first_name" | "last_name":
                columns[path] = _required(f"author.{path}", getattr(author, path), 100)
            case "bio":
                columns["bio"] = check_length("author.bio", author.bio, 20_000)
            case "birth_date":
                columns["birth_date"] = check_date("author.birth_date", author.birth_date)
            case "nationality":
                columns["nationality"] = check_length("author.nationality", author.nationality, 50)
            case "website_url":
                columns["website_url"] = check_length("author.website_url", author.website_url, 255)
            case _:
                raise InvalidArgument("update_mask", f"{path!r} cannot be updated")
    return columns


def publisher_columns(publisher: catalog_pb2.Publisher, paths: Sequence[str]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for path in paths:
        match path:
            case "name":
                columns["name"] = _required("publisher.name", publisher.name, 200)
            case "description":
                columns["description"] = check_length(
                    "publisher.description", publisher.description, 5000
                )
            case "website_url":
                columns["website_url"] = check_length(
                    "publisher.website_url", publisher.website_url, 255
                )
            case "country":
                columns["country"] = check_length("publisher.country", publisher.country, 50)
            case "established_year":
                year = publisher.established_year
                if year and not 1400 <= year <= 2100:
                    raise InvalidArgument("publisher.established_year", "must be a year 1400..2100")
                columns["established_year"] = year or None
            case _:
                raise InvalidArgument("update_mask", f"{path!r} cannot be updated")
    return columns


CATEGORY_CREATE_PATHS = ("name", "description", "slug", "parent_category_id")
AUTHOR_CREATE_PATHS = ("first_name", "last_name", "bio", "birth_date", "nationality", "website_url")
PUBLISHER_CREATE_PATHS = ("name", "description", "website_url", "country", "established_year")


class TaxonomyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _create(
        self,
        table: str,
        columns: dict[str, Any],
        event_type: str,
        event: Callable[[asyncpg.Record], Message],
    ) -> asyncpg.Record:
        """Inserts a row and writes its event in the same transaction."""
        names = list(columns)
        placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        async with self.pool.acquire() as conn, conn.transaction():
            with constraint_errors():
                row: asyncpg.Record = await conn.fetchrow(
                    f"INSERT INTO book_catalog.{table} ({', '.join(names)}) "
                    f"VALUES ({placeholders}) RETURNING *",
                    *columns.values(),
                )
            await write_outbox(
                conn, OUTBOX, [new_event(event_type, row["id"], row["version"], event(row))]
            )
        return row

    async def _update(
        self,
        conn: asyncpg.Connection,
        table: str,
        entity: str,
        row_id: int,
        columns: dict[str, Any],
        event: Callable[[asyncpg.Record, list[str]], Message],
    ) -> asyncpg.Record:
        """Writes the columns that differ and an "<entity>.updated" event, in the caller's
        transaction; an update that changes nothing writes neither."""
        check_lookup_id(f"{entity}.id", row_id, entity)
        if not columns:
            raise InvalidArgument("update_mask", "list the fields to change")
        old = await conn.fetchrow(
            f"SELECT * FROM book_catalog.{table} WHERE id = $1 FOR UPDATE", row_id
        )
        if old is None:
            raise NotFound(f"no {entity} with id {row_id}")
        changed = {name: value for name, value in columns.items() if old[name] != value}
        if not changed:
            return old
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(changed, 2))
        with constraint_errors():
            row: asyncpg.Record = await conn.fetchrow(
                f"UPDATE book_catalog.{table} SET {assignments} WHERE id = $1 RETURNING *",
                row_id,
                *changed.values(),
            )
        await write_outbox(
            conn,
            OUTBOX,
            [new_event(f"{entity}.updated", row_id, row["version"], event(row, list(changed)))],
        )
        return row

    # --- categories ----------------------------------------------------------------------

    async def create_category(self, category: catalog_pb2.Category) -> catalog_pb2.Category:
        columns = category_columns(category, CATEGORY_CREATE_PATHS)
        row = await self._create(
            "categories",
            columns,
            "category.created",
            lambda r: catalog_pb2.CategoryCreatedEvent(category=category_from_row(r)),
        )
        return category_from_row(row)

    async def update_category(
        self, category: catalog_pb2.Category, paths: Sequence[str]
    ) -> catalog_pb2.Category:
        check_lookup_id("category.id", category.id, "category")
        columns = category_columns(category, paths)
        async with self.pool.acquire() as conn, conn.transaction():
            new_parent = columns.get("parent_category_id")
            if new_parent is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _CATEGORY_TREE_LOCK)
                if new_parent in await self._descendants(conn, category.id):
                    raise InvalidArgument(
                        "category.parent_category_id",
                        f"category {new_parent} is {category.id} or below it: "
                        "a category cannot become its own ancestor",
                    )
            row = await self._update(
                conn,
                "categories",
                "category",
                category.id,
                columns,
                lambda r, changed: catalog_pb2.CategoryUpdatedEvent(
                    category=category_from_row(r), changed_fields=changed
                ),
            )
        return category_from_row(row)

    async def _descendants(
        self, conn: asyncpg.Connection | asyncpg.Pool, category_id: int
    ) -> set[int]:
        return {row["id"] for row in await conn.fetch(_DESCENDANTS, category_id)}

    async def category_and_descendants(self, category_id: int) -> list[int]:
        ids = await self._descendants(self.pool, category_id)
        if not ids:
            raise NotFound(f"no category with id {category_id}")
        return sorted(ids)

    async def list_categories(
        self, parent_id: int, direct_children_only: bool, after_id: int, limit: int
    ) -> list[catalog_pb2.Category]:
        # $1 is the last id of the previous page, $2 the page size.
        if direct_children_only:
            condition, extra = "parent_category_id IS NOT DISTINCT FROM $3", [parent_id or None]
        elif parent_id:
            condition, extra = (
                f"id IN ({_DESCENDANTS.replace('$1', '$3')}) AND id <> $3",
                [parent_id],
            )
        else:
            condition, extra = "TRUE", []
        rows = await self.pool.fetch(
            f"SELECT * FROM book_catalog.categories WHERE {condition} AND id > $1 "
            "ORDER BY id LIMIT $2",
            after_id,
            limit,
            *extra,
        )
        return [category_from_row(row) for row in rows]

    # --- authors -------------------------------------------------------------------------

    async def create_author(self, author: catalog_pb2.Author) -> catalog_pb2.Author:
        columns = author_columns(author, AUTHOR_CREATE_PATHS)
        row = await self._create(
            "authors",
            columns,
            "author.created",
            lambda r: catalog_pb2.AuthorCreatedEvent(author=author_from_row(r)),
        )
        return author_from_row(row)

    async def update_author(
        self, author: catalog_pb2.Author, paths: Sequence[str]
    ) -> catalog_pb2.Author:
        columns = author_columns(author, paths)
        async with self.pool.acquire() as conn, conn.transaction():
            # A rename rewrites the search vectors of the author's books (trigger).
            row = await self._update(
                conn,
                "authors",
                "author",
                author.id,
                columns,
                lambda r, changed: catalog_pb2.AuthorUpdatedEvent(
                    author=author_from_row(r), changed_fields=changed
                ),
            )
        return author_from_row(row)

    async def list_authors(
        self, last_name_prefix: str, after: Sequence[Any] | None, limit: int
    ) -> list[catalog_pb2.Author]:
        escaped = last_name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        after_key = after or ("", "", 0)
        rows = await self.pool.fetch(
            "SELECT * FROM book_catalog.authors WHERE last_name ILIKE $1 || '%' "
            "AND (last_name, first_name, id) > ($2, $3, $4) "
            "ORDER BY last_name, first_name, id LIMIT $5",
            escaped,
            *after_key,
            limit,
        )
        return [author_from_row(row) for row in rows]

    # --- publishers ----------------------------------------------------------------------

    async def create_publisher(self, publisher: catalog_pb2.Publisher) -> catalog_pb2.Publisher:
        columns = publisher_columns(publisher, PUBLISHER_CREATE_PATHS)
        row = await self._create(
            "publishers",
            columns,
            "publisher.created",
            lambda r: catalog_pb2.PublisherCreatedEvent(publisher=publisher_from_row(r)),
        )
        return publisher_from_row(row)

    async def update_publisher(
        self, publisher: catalog_pb2.Publisher, paths: Sequence[str]
    ) -> catalog_pb2.Publisher:
        columns = publisher_columns(publisher, paths)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._update(
                conn,
                "publishers",
                "publisher",
                publisher.id,
                columns,
                lambda r, changed: catalog_pb2.PublisherUpdatedEvent(
                    publisher=publisher_from_row(r), changed_fields=changed
                ),
            )
        return publisher_from_row(row)

    async def list_publishers(
        self, after: Sequence[Any] | None, limit: int
    ) -> list[catalog_pb2.Publisher]:
        after_key = after or ("", 0)
        rows = await self.pool.fetch(
            "SELECT * FROM book_catalog.publishers WHERE (name, id) > ($1, $2) "
            "ORDER BY name, id LIMIT $3",
            *after_key,
            limit,
        )
        return [publisher_from_row(row) for row in rows]
