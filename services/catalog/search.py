"""Full-text search over active books (the seed's search_books, done right).

Fixed against the seed: the author names are in the stored vector (kept right by
triggers); price_asc really sorts ascending; filters include subcategories, format and
language; author names are aggregated for the returned page only, after LIMIT; the SQL is
built from the filters actually given, so the planner sees real values (no generic plan
over `param IS NULL OR ...`). Query text uses web-search syntax: "quoted phrase", OR, -word.
Beyond the seed: a total of the matches, exact when small and estimated when counting
would mean scanning the catalog (see search_total).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2
from services.catalog.books import BOOK_COLUMNS, book_from_row

SORTS = {
    catalog_pb2.SEARCH_SORT_UNSPECIFIED: "relevance",
    catalog_pb2.SEARCH_SORT_RELEVANCE: "relevance",
    catalog_pb2.SEARCH_SORT_PRICE_ASC: "price_asc",
    catalog_pb2.SEARCH_SORT_PRICE_DESC: "price_desc",
    catalog_pb2.SEARCH_SORT_RATING: "rating",
    catalog_pb2.SEARCH_SORT_NEWEST: "newest",
}

# Sort keys per order, as (expression, direction); b.id breaks every tie.
_SORT_KEYS: dict[str, list[tuple[str, str]]] = {
    "relevance": [("ts_rank(b.search_vector, q.query)", "DESC")],
    "price_asc": [("b.price", "ASC")],
    "price_desc": [("b.price", "DESC")],
    "rating": [("b.rating_average", "DESC"), ("b.rating_count", "DESC")],
    "newest": [("b.publication_date", "DESC NULLS LAST")],
    # Relevance without search words: the best sellers first.
    "popular": [("b.purchase_count", "DESC")],
}


@dataclass(frozen=True)
class SearchFilters:
    text: str
    category_ids: tuple[int, ...] | None
    min_price: Decimal | None
    max_price: Decimal | None
    format: str | None
    language: str | None

    def cache_key(self) -> str:
        return repr(self)


def _where(filters: SearchFilters, has_terms: bool) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments; $1 is always the query text."""
    conditions = ["b.status = 'active'"]
    args: list[Any] = [filters.text]
    if has_terms:
        conditions.append("b.search_vector @@ q.query")

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.category_ids is not None:
        conditions.append(f"b.category_id = ANY({arg(list(filters.category_ids))}::int[])")
    if filters.min_price is not None:
        conditions.append(f"b.price >= {arg(filters.min_price)}")
    if filters.max_price is not None:
        conditions.append(f"b.price <= {arg(filters.max_price)}")
    if filters.format is not None:
        conditions.append(f"b.format = {arg(filters.format)}")
    if filters.language is not None:
        conditions.append(f"b.language_code = {arg(filters.language)}")
    return " AND ".join(conditions), args


_QUERY = "(SELECT websearch_to_tsquery('english', $1::text) AS query) q"


def match_conditions(filters: SearchFilters, has_terms: bool) -> tuple[str, str, list[Any]]:
    """For other statements over the page's matches (facets): the query's FROM item `q`,
    the WHERE clause over books `b` and `q`, and their arguments ($1 the text)."""
    where, args = _where(filters, has_terms)
    return _QUERY, where, args


def page_sql(
    filters: SearchFilters, has_terms: bool, sort: str, offset: int, limit: int
) -> tuple[str, list[Any]]:
    """The page's books in order; authors are aggregated for these rows only. The inner
    query carries its sort keys out so the outer one can keep the order exactly."""
    where, args = _where(filters, has_terms)
    keys = _SORT_KEYS["popular" if sort == "relevance" and not has_terms else sort]
    inner_keys = ", ".join(f"{expr} AS k{i}" for i, (expr, _) in enumerate(keys))
    inner_order = ", ".join(f"{expr} {direction}" for expr, direction in keys)
    outer_order = ", ".join(f"page.k{i} {direction}" for i, (_, direction) in enumerate(keys))
    args += [limit, offset]
    sql = f"""
        WITH page AS (
            SELECT b.id, {inner_keys} FROM book_catalog.books b, {_QUERY}
             WHERE {where}
             ORDER BY {inner_order}, b.id LIMIT ${len(args) - 1} OFFSET ${len(args)}
        )
        SELECT {BOOK_COLUMNS}
          FROM page JOIN book_catalog.books b ON b.id = page.id
         ORDER BY {outer_order}, page.id"""
    return sql, args


def count_sql(filters: SearchFilters, has_terms: bool) -> tuple[str, list[Any]]:
    where, args = _where(filters, has_terms)
    return f"SELECT count(*) FROM book_catalog.books b, {_QUERY} WHERE {where}", args


# Counting every match of a broad query is a scan of the whole catalog (~0.4 s of two cores
# over a million books), so large totals are estimated. The checks go by cost: the
# planner's row estimate (nothing read), then a block sample of about SAMPLE_ROWS books; the
# exact count runs only when one of them puts the total below EXACT_COUNT_BELOW.
SAMPLE_ROWS = 20_000
EXACT_COUNT_BELOW = 20_000


def sample_sql(
    filters: SearchFilters, has_terms: bool, sample_rows: int = SAMPLE_ROWS
) -> tuple[str, list[Any]]:
    """Matches in a repeatable block sample, and the sample's percentage of the books.
    A table never analyzed (reltuples -1) or a small one is sampled whole: 100 percent."""
    where, args = _where(filters, has_terms)
    args.append(sample_rows)
    sql = f"""
        WITH sample AS (
            SELECT least(100, 100.0 * ${len(args)} / greatest(reltuples, 1))::real AS percent
              FROM pg_class WHERE oid = 'book_catalog.books'::regclass
        )
        SELECT count(*) AS hits, (SELECT percent FROM sample) AS percent
          FROM book_catalog.books b TABLESAMPLE SYSTEM ((SELECT percent FROM sample))
               REPEATABLE (0), {_QUERY}
         WHERE {where}"""
    return sql, args


@dataclass(frozen=True)
class Total:
    count: int
    estimate: bool


def round_estimate(value: float) -> int:
    """Two significant digits: 421,150 -> 420,000. An estimate should not look exact."""
    if value < 100:
        return round(value)
    magnitude = 10 ** (len(str(int(value))) - 2)
    return int(round(value / magnitude) * magnitude)


async def search_total(
    pool: asyncpg.Pool,
    filters: SearchFilters,
    has_terms: bool,
    *,
    sample_rows: int = SAMPLE_ROWS,
    exact_below: int = EXACT_COUNT_BELOW,
) -> Total:
    if await planned_rows(pool, filters, has_terms) >= exact_below:
        sql, args = sample_sql(filters, has_terms, sample_rows)
        sample = await pool.fetchrow(sql, *args)
        if sample["percent"] >= 100:
            return Total(int(sample["hits"]), estimate=False)
        estimated = sample["hits"] * 100.0 / sample["percent"]
        if estimated >= exact_below:
            return Total(round_estimate(estimated), estimate=True)
    sql, args = count_sql(filters, has_terms)
    return Total(int(await pool.fetchval(sql, *args)), estimate=False)


async def planned_rows(pool: asyncpg.Pool, filters: SearchFilters, has_terms: bool) -> float:
    """The planner's estimate of the matches, from the column statistics (no row read)."""
    where, args = _where(filters, has_terms)
    sql = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM book_catalog.books b, {_QUERY} WHERE {where}"
    plan = await pool.fetchval(sql, *args)  # decoded by the pool's json codec
    return float(plan[0]["Plan"]["Plan Rows"])


# The stop-word check depends on the text alone; popular queries repeat, so it is
# remembered (a round trip saved on every cold search).
_TERMS_CACHE_SIZE = 4096
_has_terms: dict[str, bool] = {}


async def has_search_terms(pool: asyncpg.Pool, text: str) -> bool:
    """False when the text has no searchable word (empty, or only stop words like "the")."""
    if not text.strip():
        return False
    known = _has_terms.get(text)
    if known is not None:
        return known
    nodes = await pool.fetchval("SELECT numnode(websearch_to_tsquery('english', $1))", text)
    if len(_has_terms) >= _TERMS_CACHE_SIZE:
        _has_terms.clear()
    _has_terms[text] = bool(nodes)
    return bool(nodes)


async def search_page(
    pool: asyncpg.Pool, filters: SearchFilters, has_terms: bool, sort: str, offset: int, limit: int
) -> list[catalog_pb2.Book]:
    sql, args = page_sql(filters, has_terms, sort, offset, limit)
    return [book_from_row(row) for row in await pool.fetch(sql, *args)]
