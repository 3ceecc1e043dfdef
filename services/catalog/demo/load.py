"""Writes the demo catalog into PostgreSQL: binary COPY, the triggers' work done set-based,
and the locks that takes.

`seed_catalog(dsn, books)` ADDS data to a migrated `book_catalog` schema; it works on an
empty catalog and again on a non-empty one (the category tree and the publishers are
reused, new rows get ids, ISBNs and slugs after the existing ones). A given seed on a given
database state gives the same catalog.

How (1,000,000 books in minutes): rows are generated in bounded batches (in a thread, while
PostgreSQL ingests the previous batch) and streamed with binary COPY. Inside one
transaction the user triggers of books, book_authors and reviews are disabled; afterwards
the search vectors and rating aggregates of the new books are set with set-based UPDATEs
using the triggers' own function (`book_document`) and aggregate, and the triggers are
enabled again. Measured before the split into this package: 1,000,000 books (125k authors,
1.25M author links, 900k reviews) in about 4.6 minutes on 2 cores, PostgreSQL 15, fsync off.

Locks, i.e. who waits while it runs:
- Into a catalog that has books: readers never wait. Writers of authors, books,
  book_authors and reviews wait until the commit (SHARE ROW EXCLUSIVE, which plain reads
  do not conflict with); disabling triggers takes the same lock. Afterwards a plain VACUUM
  (no exclusive lock) makes the row versions the UPDATEs left dead reusable.
- Into an empty catalog, from BULK_BOOKS books on (the first big seed, e.g. a benchmark
  database): the bulk path. It drops the plain indexes of books and builds them again
  before the commit (building a GIN index over a million vectors takes seconds, keeping it
  up to date row by row minutes), then rewrites books compactly with VACUUM FULL after the
  commit (the UPDATEs wrote every book twice). DROP INDEX and VACUUM FULL take ACCESS
  EXCLUSIVE on books: until the rewrite ends, every query on books waits, readers too.
  Seed before serving, not into a catalog in use.

    python -m services.catalog.demo --books 100000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass

import asyncpg
from tqdm import tqdm

from services.catalog.demo.generate import (
    AUTHOR_COLUMNS,
    BOOK_AUTHOR_COLUMNS,
    BOOK_COLUMNS,
    ISBN_BODY_END,
    ISBN_BODY_START,
    REVIEW_COLUMNS,
    Vocabulary,
    World,
    author_rows,
    generate_batches,
    publisher_names,
)
from services.catalog.demo.words import CATEGORY_TREE, NATIONALITIES
from services.catalog.validation import slugify

SCHEMA = "book_catalog"
# Books whose vectors and ratings one UPDATE statement sets (a progress step).
UPDATE_CHUNK = 100_000
# The bulk path (see above) from this many books on, into an empty catalog only.
BULK_BOOKS = 100_000
_TRIGGER_TABLES = ("books", "book_authors", "reviews")


@dataclass(frozen=True)
class SeedReport:
    """What one run added (reused categories and publishers are not counted)."""

    categories: int
    authors: int
    publishers: int
    books: int
    book_authors: int
    reviews: int
    elapsed_seconds: float
    # True when the run took the bulk path (indexes rebuilt, table rewritten).
    bulk: bool


# Database


async def _ensure_categories(conn: asyncpg.Connection) -> tuple[int, list[int], list[int]]:
    """Creates the missing part of the tree; returns (created, fiction ids, nonfiction ids)."""
    tops = [(name, slugify(name), f"Books in {name}.") for name, _, _ in CATEGORY_TREE]
    subs = [
        (sub, slugify(sub), f"{sub} ({name}).", slugify(name))
        for name, _, children in CATEGORY_TREE
        for sub in children
    ]
    created = await conn.fetch(
        f"""
        INSERT INTO {SCHEMA}.categories (name, slug, description)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
        ON CONFLICT DO NOTHING RETURNING id
        """,
        *[list(column) for column in zip(*tops, strict=True)],
    )
    created += await conn.fetch(
        f"""
        INSERT INTO {SCHEMA}.categories (name, slug, description, parent_category_id)
        SELECT u.name, u.slug, u.description, p.id
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
               AS u(name, slug, description, parent_slug)
          JOIN {SCHEMA}.categories p ON p.slug = u.parent_slug
        ON CONFLICT DO NOTHING RETURNING id
        """,
        *[list(column) for column in zip(*subs, strict=True)],
    )
    rows = await conn.fetch(
        f"SELECT id, name, slug FROM {SCHEMA}.categories WHERE name = ANY($1) OR slug = ANY($2)",
        [s[0] for s in subs],
        [s[1] for s in subs],
    )
    by_name = {r["name"]: r["id"] for r in rows}
    by_slug = {r["slug"]: r["id"] for r in rows}
    fiction: list[int] = []
    nonfiction: list[int] = []
    for _name, is_fiction, children in CATEGORY_TREE:
        for sub in children:
            category_id = by_slug.get(slugify(sub), by_name.get(sub))
            if category_id is not None:
                (fiction if is_fiction else nonfiction).append(category_id)
    if not fiction or not nonfiction:
        raise RuntimeError("the category tree could not be created")
    return len(created), fiction, nonfiction


async def _ensure_publishers(conn: asyncpg.Connection, names: list[str]) -> tuple[int, list[int]]:
    rng = random.Random(len(names))
    rows = [
        (
            name,
            f"{name} publishes fiction and nonfiction.",
            f"https://www.{slugify(name)}.example.com",
            rng.choice(NATIONALITIES),
            rng.randint(1820, 2020),
        )
        for name in names
    ]
    created = await conn.fetch(
        f"""
        INSERT INTO {SCHEMA}.publishers (name, description, website_url, country, established_year)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
        ON CONFLICT DO NOTHING RETURNING id
        """,
        *[list(column) for column in zip(*rows, strict=True)],
    )
    ids = await conn.fetch(
        f"SELECT id FROM {SCHEMA}.publishers WHERE name = ANY($1) ORDER BY id", names
    )
    return len(created), [r["id"] for r in ids]


async def _next_id(conn: asyncpg.Connection, table: str) -> int:
    """The first free id: after the table's rows and after what its sequence handed out."""
    value = await conn.fetchval(
        f"""
        SELECT greatest(
            (SELECT coalesce(max(id), 0) FROM {SCHEMA}.{table}),
            (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
               FROM {SCHEMA}.{table}_id_seq)
        ) + 1
        """
    )
    return int(value)


async def _first_isbn_body(conn: asyncpg.Connection) -> int:
    """The first 9-digit ISBN body after the ones already used in our range."""
    last13 = await conn.fetchval(
        f"""
        SELECT isbn_13 FROM {SCHEMA}.books
         WHERE isbn_13 >= ('978' || $1::text) AND isbn_13 <= ('978' || $2::text || '9')
         ORDER BY isbn_13 DESC LIMIT 1
        """,
        str(ISBN_BODY_START),
        str(ISBN_BODY_END),
    )
    last10 = await conn.fetchval(
        f"""
        SELECT isbn_10 FROM {SCHEMA}.books
         WHERE isbn_10 >= $1::text AND isbn_10 <= ($2::text || 'X')
         ORDER BY isbn_10 DESC LIMIT 1
        """,
        str(ISBN_BODY_START),
        str(ISBN_BODY_END),
    )
    body = ISBN_BODY_START
    if last13 is not None and last13[3:12].isdigit():
        body = max(body, int(last13[3:12]) + 1)
    if last10 is not None and last10[:9].isdigit():
        body = max(body, int(last10[:9]) + 1)
    return body


async def _set_sequence(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(
        f"""
        SELECT setval('{SCHEMA}.{table}_id_seq', m)
          FROM (SELECT max(id) AS m FROM {SCHEMA}.{table}) x
         WHERE m >= (SELECT last_value FROM {SCHEMA}.{table}_id_seq)
        """
    )


# The triggers' expressions, set-based over a range of new book ids: the vector of
# books_before_write / book_authors_changed and the aggregates of reviews_changed.
_FINISH_BOOKS = f"""
UPDATE {SCHEMA}.books b
   SET search_vector = {SCHEMA}.book_document(b.id, b.title, b.subtitle, b.description),
       rating_count = coalesce(s.n, 0),
       rating_average = coalesce(round(s.avg_rating, 2), 0)
  FROM (SELECT g.id, r.n, r.avg_rating
          FROM generate_series($1::int, $2::int) AS g(id)
          LEFT JOIN (SELECT book_id, count(*) AS n, avg(rating) AS avg_rating
                       FROM {SCHEMA}.reviews
                      WHERE book_id BETWEEN $1 AND $2 AND status = 'published'
                      GROUP BY book_id) r ON r.book_id = g.id) s
 WHERE b.id = s.id AND b.id BETWEEN $1 AND $2
"""


# books_suggestions' rows (SuggestBooks' titles), set-based; popularity comes with the
# popular-books refresh.
_BOOK_SUGGESTIONS = f"""
INSERT INTO {SCHEMA}.suggestions (kind, ref_id, text, norm)
SELECT 'title', b.id, b.title, {SCHEMA}.suggest_norm(b.title)
  FROM {SCHEMA}.books b
 WHERE b.id BETWEEN $1 AND $2 AND b.status = 'active'
    ON CONFLICT DO NOTHING
"""


# The spelling lexicon of new books (migration 202511431), whose trigger is off while they
# load: their lexemes counted as pending changes (folded once at the end), and the words
# of their texts and authors' names, each distinct word stemmed once (per book, as the
# trigger does, a 1M load would parse for half an hour).
_BOOK_SPELLING_COUNTS = f"""
INSERT INTO {SCHEMA}.spelling_lexeme_changes (lexeme, delta)
SELECT l.lexeme, count(*)
  FROM {SCHEMA}.books b, unnest(tsvector_to_array(b.search_vector)) l(lexeme)
 WHERE b.id BETWEEN $1 AND $2 AND b.status = 'active'
 GROUP BY l.lexeme
"""
_BOOK_SPELLING_WORDS = f"""
WITH words AS MATERIALIZED (
    SELECT u.lexeme AS word
      FROM {SCHEMA}.books b,
           unnest(to_tsvector('simple', concat_ws(' ', b.title, b.subtitle, b.description))) u
     WHERE b.id BETWEEN $1 AND $2 AND b.status = 'active'
    UNION
    SELECT u.lexeme
      FROM {SCHEMA}.book_authors ba JOIN {SCHEMA}.authors a ON a.id = ba.author_id,
           unnest(to_tsvector('simple', a.first_name || ' ' || a.last_name)) u
     WHERE ba.book_id BETWEEN $1 AND $2
)
INSERT INTO {SCHEMA}.spelling_words (word, lexeme)
SELECT w.word, l.lexeme[1]
  FROM words w, LATERAL (SELECT tsvector_to_array(to_tsvector('english', w.word)) AS lexeme) l
 WHERE length(w.word) BETWEEN 3 AND 40 AND w.word !~ '[[:digit:][:punct:]]'
   AND cardinality(l.lexeme) = 1
    ON CONFLICT (word) DO NOTHING
"""


async def _drop_plain_book_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drops the indexes of books that back no constraint; returns their definitions."""
    rows = await conn.fetch(
        f"""
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
          FROM pg_index i
         WHERE i.indrelid = '{SCHEMA}.books'::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
         ORDER BY 1
        """
    )
    for row in rows:
        await conn.execute(f"DROP INDEX {row['name']}")
    return [row["definition"] for row in rows]


def _note(show: bool, message: str) -> None:
    if show:
        tqdm.write(message, file=sys.stderr)


async def seed_catalog(
    dsn: str,
    books: int,
    *,
    seed: int = 42,
    progress: bool = True,
    vocabulary: Vocabulary | None = None,
) -> SeedReport:
    """Adds `books` books (with authors, publishers, categories and reviews) to the catalog.

    `vocabulary` replaces words.py's titles, descriptions and author names (see Vocabulary).

    `progress` draws bars on stderr when it is a terminal; elsewhere (logs, CI) it is quiet.
    """
    if books < 0:
        raise ValueError("books must be >= 0")
    started = time.monotonic()
    show = progress and sys.stderr.isatty()
    rng = random.Random(seed)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        # A large work_mem lets the GIN index absorb the new vectors in big merges.
        await conn.execute("SET work_mem = '256MB'; SET maintenance_work_mem = '512MB'")
        async with conn.transaction():
            # Writers of these tables wait until the commit; readers do not.
            await conn.execute(
                f"LOCK TABLE {SCHEMA}.authors, {SCHEMA}.books, {SCHEMA}.book_authors, "
                f"{SCHEMA}.reviews IN SHARE ROW EXCLUSIVE MODE"
            )
            # Decided under the lock: nobody can add the first book meanwhile.
            bulk = books >= BULK_BOOKS and not await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.books)"
            )
            categories, fiction, nonfiction = await _ensure_categories(conn)
            publishers, publisher_ids = await _ensure_publishers(
                conn, publisher_names(random.Random(seed), 200)
            )

            n_authors = max(20, books // 8)
            first_author = await _next_id(conn, "authors")
            if vocabulary is None:
                authors = author_rows(rng, first_author, n_authors)
            else:
                authors = author_rows(
                    rng, first_author, n_authors, vocabulary.first_names, vocabulary.last_names
                )
            await conn.copy_records_to_table(
                "authors", schema_name=SCHEMA, columns=AUTHOR_COLUMNS, records=authors
            )
            del authors
            await _set_sequence(conn, "authors")
            world = World(
                fiction, nonfiction, publisher_ids, range(first_author, first_author + n_authors)
            )

            for table in _TRIGGER_TABLES:
                await conn.execute(f"ALTER TABLE {SCHEMA}.{table} DISABLE TRIGGER USER")
            dropped_indexes = await _drop_plain_book_indexes(conn) if bulk else []

            first_book = await _next_id(conn, "books")
            first_review = await _next_id(conn, "reviews")
            n_links = n_reviews = 0
            batches = generate_batches(
                rng,
                world,
                books=books,
                first_book_id=first_book,
                first_isbn_body=await _first_isbn_body(conn),
                first_review_id=first_review,
                vocabulary=vocabulary,
            )
            with tqdm(total=books, desc="books", unit=" books", disable=not show) as bar:
                # The next batch is generated in a thread while PostgreSQL ingests this one.
                upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                try:
                    while (batch := await upcoming) is not None:
                        upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                        await conn.copy_records_to_table(
                            "books", schema_name=SCHEMA, columns=BOOK_COLUMNS, records=batch.books
                        )
                        await conn.copy_records_to_table(
                            "book_authors",
                            schema_name=SCHEMA,
                            columns=BOOK_AUTHOR_COLUMNS,
                            records=batch.book_authors,
                        )
                        if batch.reviews:
                            await conn.copy_records_to_table(
                                "reviews",
                                schema_name=SCHEMA,
                                columns=REVIEW_COLUMNS,
                                records=batch.reviews,
                            )
                        n_links += len(batch.book_authors)
                        n_reviews += len(batch.reviews)
                        bar.update(len(batch.books))
                finally:
                    upcoming.cancel()
            await _set_sequence(conn, "books")
            await _set_sequence(conn, "reviews")

            # Statistics first: without them book_document's author lookup is planned for an
            # empty book_authors (a hash join over all authors per book, 5x slower).
            for table in ("authors", *_TRIGGER_TABLES):
                await conn.execute(f"ANALYZE {SCHEMA}.{table}")
            last_book = first_book + books - 1
            with tqdm(total=books, desc="indexing", unit=" books", disable=not show) as bar:
                for low in range(first_book, last_book + 1, UPDATE_CHUNK):
                    high = min(low + UPDATE_CHUNK - 1, last_book)
                    await conn.execute(_FINISH_BOOKS, low, high)
                    await conn.execute(_BOOK_SUGGESTIONS, low, high)
                    await conn.execute(_BOOK_SPELLING_COUNTS, low, high)
                    await conn.execute(_BOOK_SPELLING_WORDS, low, high)
                    bar.update(high - low + 1)
            await conn.execute(f"SELECT {SCHEMA}.fold_spelling_changes()")

            if dropped_indexes:
                _note(show, f"building {len(dropped_indexes)} indexes of books")
                for definition in dropped_indexes:
                    await conn.execute(definition)
            for table in _TRIGGER_TABLES:
                await conn.execute(f"ALTER TABLE {SCHEMA}.{table} ENABLE TRIGGER USER")

        # The UPDATEs above wrote every new book twice; the first versions are dead now (in
        # the transaction they still counted as live, hence after the commit).
        if bulk:
            # Compact: else they would take up half the table and every scan would read them.
            _note(show, "compacting books (VACUUM FULL: queries on books wait)")
            await conn.execute(f"VACUUM FULL {SCHEMA}.books")
        elif books:
            # Reusable by later writes, without a lock that readers or writers wait for.
            await conn.execute(f"VACUUM {SCHEMA}.books")
        _note(show, "analyzing")
        for table in ("categories", "publishers", "authors", *_TRIGGER_TABLES):
            await conn.execute(f"ANALYZE {SCHEMA}.{table}")
    finally:
        await conn.close()

    return SeedReport(
        categories=categories,
        authors=n_authors,
        publishers=publishers,
        books=books,
        book_authors=n_links,
        reviews=n_reviews,
        elapsed_seconds=time.monotonic() - started,
        bulk=bulk,
    )


def main() -> None:
    from cloudshelf.runtime.config import Settings

    parser = argparse.ArgumentParser(description="Adds demo books to the catalog database.")
    parser.add_argument(
        "--dsn",
        default=None,
        help="PostgreSQL DSN of the catalog (default: CLOUDSHELF_POSTGRES_DSN or the local stack)",
    )
    parser.add_argument("--books", type=int, default=1000, help="books to add (default 1000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    dsn = args.dsn or Settings.from_env("catalog").postgres_dsn
    report = asyncio.run(seed_catalog(dsn, args.books, seed=args.seed, progress=not args.quiet))
    print(
        f"added {report.books:,} books, {report.authors:,} authors, {report.book_authors:,} "
        f"author links, {report.reviews:,} reviews, {report.publishers} publishers, "
        f"{report.categories} categories in {report.elapsed_seconds:.1f}s"
    )
