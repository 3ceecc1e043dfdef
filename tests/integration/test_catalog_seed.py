"""The demo-data generator against a real catalog database (a fresh one in the test cluster)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
import pytest

from services.catalog.demo import SeedReport, Vocabulary, load, seed_catalog
from services.catalog.validation import isbn10_problem, isbn13_problem

BOOKS = 2000
T = TypeVar("T")

# The locks of other sessions on the catalog's tables, as (table, mode).
_LOCKS = """
SELECT DISTINCT c.relname, l.mode
  FROM pg_locks l
  JOIN pg_class c ON c.oid = l.relation
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND n.nspname = 'book_catalog' AND l.granted AND l.pid <> pg_backend_pid()
"""


async def _watching_locks(dsn: str, work: Awaitable[T]) -> tuple[T, set[tuple[str, str]], int]:
    """Runs `work` while another session polls the locks on the catalog's tables and reads
    books the way a request would (giving up after 200 ms of waiting for a lock).
    Returns what `work` returned, the locks seen and how many reads were blocked."""
    seen: set[tuple[str, str]] = set()
    blocked = 0
    task = asyncio.ensure_future(work)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET lock_timeout = '200ms'")
        while not task.done():
            seen |= {(r["relname"], r["mode"]) for r in await conn.fetch(_LOCKS)}
            try:
                await conn.fetchval("SELECT count(*) FROM book_catalog.books WHERE id < 100")
            except asyncpg.exceptions.LockNotAvailableError:
                blocked += 1
            await asyncio.sleep(0.005)
        return await task, seen, blocked
    finally:
        await conn.close()


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = ("categories", "authors", "publishers", "books", "book_authors", "reviews")
    return {t: await conn.fetchval(f"SELECT count(*) FROM book_catalog.{t}") for t in tables}


def _report_counts(report: SeedReport) -> dict[str, int]:
    return {
        "categories": report.categories,
        "authors": report.authors,
        "publishers": report.publishers,
        "books": report.books,
        "book_authors": report.book_authors,
        "reviews": report.reviews,
    }


async def _check_catalog(conn: asyncpg.Connection) -> None:
    books = await conn.fetch("SELECT isbn_13, isbn_10, price, list_price FROM book_catalog.books")
    for book in books:
        isbn13, isbn10 = book["isbn_13"], book["isbn_10"]
        assert isbn13_problem(isbn13) is None, isbn13
        assert isbn10_problem(isbn10) is None, isbn10
        assert isbn13[3:12] == isbn10[:9]
        assert book["list_price"] >= book["price"]

    # Every active book is findable by its first author's last name.
    missing = await conn.fetch(
        """
        SELECT b.id, a.last_name, b.search_vector::text AS vector
          FROM book_catalog.books b
          JOIN book_catalog.book_authors ba ON ba.book_id = b.id AND ba.order_index = 1
          JOIN book_catalog.authors a ON a.id = ba.author_id
         WHERE b.status = 'active'
           AND (b.search_vector IS NULL
                OR NOT b.search_vector @@ plainto_tsquery('english', a.last_name))
        """
    )
    assert missing == []
    assert (
        await conn.fetchval(
            """
        SELECT count(*) FROM book_catalog.books b
         WHERE b.status = 'active' AND NOT EXISTS (
               SELECT 1 FROM book_catalog.book_authors ba
                WHERE ba.book_id = b.id AND ba.order_index = 1)
        """
        )
        == 0
    )
    # Vectors equal what the trigger's function computes.
    assert (
        await conn.fetchval(
            """
        SELECT count(*) FROM book_catalog.books
         WHERE search_vector IS DISTINCT FROM
               book_catalog.book_document(id, title, subtitle, description)
        """
        )
        == 0
    )

    # Ratings are the aggregate of published reviews.
    wrong = await conn.fetch(
        """
        SELECT b.id, b.rating_average, b.rating_count, s.n, s.avg_rating
          FROM book_catalog.books b
          LEFT JOIN (SELECT book_id, count(*) AS n, round(avg(rating), 2) AS avg_rating
                       FROM book_catalog.reviews WHERE status = 'published'
                      GROUP BY book_id) s ON s.book_id = b.id
         WHERE b.rating_count <> coalesce(s.n, 0)
            OR b.rating_average <> coalesce(s.avg_rating, 0)
        """
    )
    assert wrong == []
    assert await conn.fetchval("SELECT count(*) FROM book_catalog.books WHERE rating_count > 0")


async def _book_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'book_catalog' AND tablename = 'books' ORDER BY 1"
    )
    return [(r["indexname"], r["indexdef"]) for r in rows]


async def test_seeding_builds_a_consistent_catalog_and_can_run_again(
    catalog_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(catalog_dsn)
    try:
        indexes = await _book_indexes(conn)
        # Into the empty catalog the bulk path: indexes dropped and built again, the table
        # rewritten, and that locks readers out of books (as load.py says).
        monkeypatch.setattr(load, "BULK_BOOKS", BOOKS // 2)
        first, locks, _ = await _watching_locks(
            catalog_dsn, seed_catalog(catalog_dsn, BOOKS, seed=1, progress=False)
        )
        assert first.bulk
        assert ("books", "AccessExclusiveLock") in locks
        assert await _book_indexes(conn) == indexes
        counts = await _counts(conn)
        assert counts == _report_counts(first)
        assert first.books == BOOKS
        assert first.authors == BOOKS // 8
        assert 60 <= first.categories <= 100
        assert first.publishers == 200
        assert BOOKS <= first.book_authors <= 3 * BOOKS
        assert 0.1 * BOOKS <= first.reviews <= 1.5 * BOOKS
        assert first.elapsed_seconds > 0
        await _check_catalog(conn)
        # Compact: no dead row versions left by the load (those would double every scan).
        assert await conn.fetchval(
            "SELECT pg_relation_size('book_catalog.books')"
            " < 1.3 * (SELECT sum(pg_column_size(b.*) + 28) FROM book_catalog.books b)"
        )

        # The tree: top-level genres with 3 to 8 subcategories each, two levels.
        children = await conn.fetch(
            """
            SELECT p.id, count(c.id) AS n
              FROM book_catalog.categories p
              LEFT JOIN book_catalog.categories c ON c.parent_category_id = p.id
             WHERE p.parent_category_id IS NULL GROUP BY p.id
            """
        )
        assert len(children) >= 10
        assert all(3 <= row["n"] <= 8 for row in children)

        # A second run adds to the catalog without key collisions, reusing the tree. However
        # large, it never takes the bulk path into a catalog that has books: readers of
        # every table go on, only writers wait.
        monkeypatch.setattr(load, "BULK_BOOKS", 1)
        second, locks, blocked_reads = await _watching_locks(
            catalog_dsn, seed_catalog(catalog_dsn, BOOKS, seed=2, progress=False)
        )
        assert not second.bulk
        assert ("books", "ShareRowExclusiveLock") in locks  # the watcher saw the load
        strong = {(table, mode) for table, mode in locks if mode == "AccessExclusiveLock"}
        assert strong == set()
        assert blocked_reads == 0
        assert await _book_indexes(conn) == indexes
        assert second.categories == 0
        after = await _counts(conn)
        for table, added in _report_counts(second).items():
            assert after[table] == counts[table] + added, table
        await _check_catalog(conn)

        # The triggers are on again: a plain INSERT gets its vector, a review its rating.
        book_id = await conn.fetchval(
            """
            INSERT INTO book_catalog.books (isbn_13, title, description, price)
            VALUES ('9780306406157', 'Quixotic Lighthouses', 'A zeppelin odyssey.', 9.99)
            RETURNING id
            """
        )
        assert book_id == await conn.fetchval("SELECT max(id) FROM book_catalog.books")
        assert await conn.fetchval(
            """
            SELECT search_vector @@ plainto_tsquery('english', 'lighthouse zeppelin')
              FROM book_catalog.books WHERE id = $1
            """,
            book_id,
        )
        await conn.execute(
            "INSERT INTO book_catalog.reviews (book_id, user_id, rating) VALUES ($1, 'u1', 4)",
            book_id,
        )
        rating = await conn.fetchrow(
            "SELECT rating_average, rating_count FROM book_catalog.books WHERE id = $1", book_id
        )
        assert (float(rating["rating_average"]), rating["rating_count"]) == (4.0, 1)
        # Sequences follow the seeded ids.
        author_id = await conn.fetchval(
            "INSERT INTO book_catalog.authors (first_name, last_name) VALUES ('A', 'B') "
            "RETURNING id"
        )
        assert author_id == await conn.fetchval("SELECT max(id) FROM book_catalog.authors")
    finally:
        await conn.close()


async def test_seeding_is_deterministic(catalog_dsn: str) -> None:
    await seed_catalog(catalog_dsn, 200, seed=5, progress=False)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        query = "SELECT title, description, price FROM book_catalog.books ORDER BY id"
        first = [tuple(r) for r in await conn.fetch(query)]
        await conn.execute(
            "TRUNCATE book_catalog.books, book_catalog.authors, book_catalog.book_authors, "
            "book_catalog.reviews, book_catalog.book_stats RESTART IDENTITY"
        )
        await seed_catalog(catalog_dsn, 200, seed=5, progress=False)
        assert [tuple(r) for r in await conn.fetch(query)] == first
    finally:
        await conn.close()


async def test_a_vocabulary_gives_the_books_words_and_the_authors_names(catalog_dsn: str) -> None:
    """Another vocabulary (e.g. the search benchmark's realistic English) replaces the
    templates: titles, subtitles, descriptions and names are its own, and the catalog is
    as consistent as with the demo's words (vectors, authors findable, ratings)."""

    def book_texts(rng: random.Random) -> tuple[str, str | None, str]:
        word = rng.choice(("quasar", "lantern", "meadow"))
        subtitle = "Second Volume" if rng.random() < 0.5 else None
        return f"Zyx {word.capitalize()}", subtitle, f"Every {word} is unusual here."

    vocabulary = Vocabulary(("Ottoline",), ("Quartermaine", "Featherstonehaugh"), book_texts)
    await seed_catalog(catalog_dsn, 300, seed=3, progress=False, vocabulary=vocabulary)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        await _check_catalog(conn)
        titles = {r["title"] for r in await conn.fetch("SELECT title FROM book_catalog.books")}
        assert titles == {"Zyx Quasar", "Zyx Lantern", "Zyx Meadow"}
        subtitles = await conn.fetch("SELECT DISTINCT subtitle FROM book_catalog.books")
        assert {r["subtitle"] for r in subtitles} == {"Second Volume", None}
        names = await conn.fetch("SELECT DISTINCT first_name, last_name FROM book_catalog.authors")
        assert {(r["first_name"], r["last_name"]) for r in names} == {
            ("Ottoline", "Quartermaine"),
            ("Ottoline", "Featherstonehaugh"),
        }
        assert await conn.fetchval(
            "SELECT count(*) FROM book_catalog.books "
            "WHERE search_vector @@ plainto_tsquery('english', 'lantern unusual')"
        ) == await conn.fetchval(
            "SELECT count(*) FROM book_catalog.books WHERE title = 'Zyx Lantern'"
        )
    finally:
        await conn.close()
