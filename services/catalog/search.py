"""Full-text search over active books (the seed's search_books, done right).

Fixed against the seed: the author names are in the stored vector (kept right by
triggers); price_asc really sorts ascending; filters include subcategories, format and
language; author names are aggregated for the returned page only, after LIMIT; the SQL is
built from the filters actually given, so the planner sees real values (no generic plan
over `param IS NULL OR ...`). Query text uses web-search syntax: "quoted phrase", OR, -word.

Beyond the seed:
- One statement per search returns the page and its total (`book_catalog.search_total`,
  migration 202511413): exact up to `exact_total_max` matches (10,000, or
  CLOUDSHELF_CATALOG_SEARCH_EXACT_TOTAL_MAX), above that an estimate, flagged.
- Relevance for a one-word query ranks only the books that can reach the page (see
  `RANK_LEVELS`), with the very same scores and order as ranking every match.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
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

EXACT_TOTAL_MAX_ENV = "CLOUDSHELF_CATALOG_SEARCH_EXACT_TOTAL_MAX"
# Totals are exact up to this many matches (the contract of SearchBooksResponse).
EXACT_TOTAL_MAX = 10_000
# Above it, the matches in a block sample of about this many books are scaled up.
SAMPLE_ROWS = 20_000


def exact_total_max_from_env() -> int:
    """Read at start-up (totals and facets alike): a bad value stops the service there."""
    value = os.environ.get(EXACT_TOTAL_MAX_ENV, "").strip()
    bound = int(value) if value else EXACT_TOTAL_MAX
    if bound < 1:
        raise ValueError(f"{EXACT_TOTAL_MAX_ENV} must be >= 1, not {bound}")
    return bound


@dataclass(frozen=True)
class SearchFilters:
    """What a search matches: its text and filters, the category as its whole subtree."""

    text: str
    category_ids: tuple[int, ...] | None
    min_price: Decimal | None
    max_price: Decimal | None
    format: str | None
    language: str | None

    def cache_key(self) -> str:
        return repr(self)

    def narrowed(self) -> bool:
        """True when a filter beyond the text is given."""
        return any(
            value is not None
            for value in (
                self.category_ids,
                self.min_price,
                self.max_price,
                self.format,
                self.language,
            )
        )


@dataclass(frozen=True)
class QueryWords:
    """What the query text holds, as websearch_to_tsquery reads it."""

    # False for an empty text or one of stop words only ("the"): nothing to match.
    searchable: bool
    # The query's only lexeme when it is a single word ("histories" -> "histori").
    lexeme: str | None = None
    # True when the lexeme's frequency is in the column statistics (so `planned` is
    # measured, not guessed).
    measured: bool = False
    # The planner's estimate of the active books the words match (no filter).
    planned: float = 0.0


NO_WORDS = QueryWords(searchable=False)


@dataclass(frozen=True)
class Total:
    count: int
    estimate: bool


@dataclass(frozen=True)
class SearchPage:
    books: list[catalog_pb2.Book]
    # None when the caller already knew it (and did not ask for it).
    total: Total | None
    # The facets' rows (as FACET_CTES' facet_rows) when asked for and counted with the
    # page (a search of few matches), else None.
    facet_rows: list[dict[str, Any]] | None = None


# --- SQL -------------------------------------------------------------------------------

# Each filter: its name, its condition with `{}` for the value's placeholder, and its
# position in search_total's fixed parameter list ($1 is the query text).
_FILTERS: list[tuple[str, str, Callable[[SearchFilters], Any], int]] = [
    ("category", "b.category_id = ANY({}::int[])", lambda f: _listed(f.category_ids), 2),
    ("min_price", "b.price >= {}", lambda f: f.min_price, 3),
    ("max_price", "b.price <= {}", lambda f: f.max_price, 4),
    ("format", "b.format = {}", lambda f: f.format, 5),
    ("language", "b.language_code = {}", lambda f: f.language, 6),
]
_QUERY = "(SELECT websearch_to_tsquery('english', $1::text) AS query) q"

# The filters are keys of the search's GIN index (migrations 202511441-442), so that one
# index scan finds the books of the words and the filters at once. The keys replace the
# conditions above, never join them: the planner multiplies the selectivities of
# conditions it takes for independent, and a key beside its own condition made it put a
# broad word's 60,000 matches at 16,000 (read at once, 0.7 s, instead of walking the sort
# order). A price range that is whole bands (10.00-19.99) is a key alone; any other is
# checked on the rows, with its bands' keys beside it (10.00-25.00: bands 10-20 and 20-35)
# where the words are not rare (PRICE_BANDS_BESIDE_FROM) and in the statements that read
# matches only, never in those that estimate them.
_KEYS = "book_catalog.search_filter_keys(b.category_id, b.price, b.format, b.language_code)"
# The price bands' lower edges (as the facets' and search_price_keys'): bands 0-4.
PRICE_BAND_EDGES = (Decimal(10), Decimal(20), Decimal(35), Decimal(50))


# A book's price band (0-4) in SQL, as the index keys and the facets have it.
_EDGES = ",".join(map(str, PRICE_BAND_EDGES))
PRICE_BAND = f"width_bucket(b.price, '{{{_EDGES}}}'::numeric[])"
# The columns the facets count, read with each match.
FACET_COLUMNS = f"b.category_id, b.format, b.language_code, {PRICE_BAND} AS band"

# The facets of a set of matches (`{matches}`: a FROM item with FACET_COLUMNS), as CTEs
# of a WITH RECURSIVE: `facet_rows` holds one row per facet value (facet, value, name, n)
# and an 'all' row (the matches counted, and `{percent}`: the share of the catalog read
# when sampled). GROUPING(...) tells the grouping sets apart: 7 category, 11 format,
# 13 language, 14 band, 15 all. Categories are counted under their top-level category,
# found by walking the tree (categories are few, ~0.3 ms); books without a category or
# format are in no such facet.
FACET_CTES = """
roots (id, root) AS (
    SELECT id, id FROM book_catalog.categories WHERE parent_category_id IS NULL
    UNION ALL
    SELECT c.id, r.root FROM book_catalog.categories c JOIN roots r ON c.parent_category_id = r.id
),
facet_counts AS (
    SELECT category_id, format, language_code, band,
           GROUPING(category_id, format, language_code, band) AS grouping, count(*) AS n
      FROM {matches} m
     GROUP BY GROUPING SETS ((category_id), (format), (language_code), (band), ())
),
facet_rows AS (
    SELECT 'category' AS facet, r.root::text AS value, c.name, sum(k.n)::bigint AS n,
           NULL::real AS percent
      FROM facet_counts k JOIN roots r ON r.id = k.category_id
      JOIN book_catalog.categories c ON c.id = r.root
     WHERE k.grouping = 7
     GROUP BY r.root, c.name
    UNION ALL
    SELECT 'format', k.format, NULL, k.n, NULL FROM facet_counts k
     WHERE k.grouping = 11 AND k.format IS NOT NULL
    UNION ALL
    SELECT 'language', k.language_code, NULL, k.n, NULL FROM facet_counts k
     WHERE k.grouping = 13
    UNION ALL
    SELECT 'band', k.band::text, NULL, k.n, NULL FROM facet_counts k WHERE k.grouping = 14
    UNION ALL
    SELECT 'all', NULL, NULL, k.n, {percent} FROM facet_counts k WHERE k.grouping = 15
)"""


# The highest price of each band but the last (prices have cents): a range's end there
# ends a band.
_BAND_ENDS = tuple(edge - Decimal("0.01") for edge in PRICE_BAND_EDGES)


# From the planner's estimate of this many matches of the words on, a price range that is
# not whole bands gets its bands' keys beside it. Measured at 1M books: two words of
# 1,400-3,800 planned matches with a 10.00-25.00 range, 33-52 ms -> 6-9 ms; a rare word
# (planned 403, the estimate of any word outside the statistics' most common ones)
# 1.4-1.6 ms -> 2.9-3.2 ms, as skipping through the bands' long posting lists costs more
# than checking the range on its few matches.
PRICE_BANDS_BESIDE_FROM = 1_000


def _many(words: QueryWords) -> bool:
    return words.planned >= PRICE_BANDS_BESIDE_FROM


def _key_conditions(
    filters: SearchFilters, placeholders: dict[str, str], *, price_bands_beside: bool
) -> dict[str, str]:
    """The conditions on the index keys, by the filter names they stand for (placeholders
    by name). With price_bands_beside, a price range that is not whole bands gets its
    bands' keys under the name "price bands" (its exact conditions stay)."""
    conditions: dict[str, str] = {}
    if "category" in placeholders:
        category_keys = f"book_catalog.search_category_keys({placeholders['category']}::int[])"
        conditions["category"] = f"{_KEYS} && {category_keys}"
    low = placeholders.get("min_price", "NULL")
    high = placeholders.get("max_price", "NULL")
    bands = f"{_KEYS} && book_catalog.search_price_keys({low}::numeric, {high}::numeric)"
    if price_in_whole_bands(filters):
        conditions["min_price"] = conditions["max_price"] = bands
    elif price_bands_beside and _price_leaves_out_a_band(filters):
        conditions["price bands"] = bands
    for name, prefix in (("format", "f"), ("language", "l")):
        if name in placeholders:
            conditions[name] = f"{_KEYS} @> ARRAY['{prefix}' || {placeholders[name]}::text]"
    return conditions


def _price_leaves_out_a_band(filters: SearchFilters) -> bool:
    """Whether the price range's bands are not all of them (else their keys select every
    book)."""
    low = filters.min_price is not None and filters.min_price >= PRICE_BAND_EDGES[0]
    high = filters.max_price is not None and filters.max_price < PRICE_BAND_EDGES[-1]
    return low or high


def price_in_whole_bands(filters: SearchFilters) -> bool:
    """Whether a price filter is given and selects whole bands (its ends on band edges)."""
    if filters.min_price is None and filters.max_price is None:
        return False
    return (filters.min_price is None or filters.min_price in PRICE_BAND_EDGES) and (
        filters.max_price is None or filters.max_price in _BAND_ENDS
    )


def _conditions(
    filters: SearchFilters,
    placeholders: dict[str, str],
    *,
    filter_indexes: bool = True,
    price_bands_beside: bool = True,
    words_lead: bool = False,
) -> list[str]:
    """The filters' conditions, as index keys where they can be (see _KEYS and
    _key_conditions). Without filter_indexes, written so that no index can serve them
    (`b.price + 0`); with words_lead, only those that are not keys are."""
    keys = (
        _key_conditions(filters, placeholders, price_bands_beside=price_bands_beside)
        if filter_indexes
        else {}
    )
    conditions: list[str] = [keys["price bands"]] if "price bands" in keys else []
    for name, condition, _, _ in _FILTERS:
        if name not in placeholders:
            continue
        if name in keys:
            if keys[name] not in conditions:
                conditions.append(keys[name])
            continue
        if not filter_indexes or words_lead:
            condition = _UNINDEXED.sub(r"(\1 + 0)", condition)
        conditions.append(condition.format(placeholders[name]))
    return conditions


def _listed(ids: tuple[int, ...] | None) -> list[int] | None:
    return None if ids is None else list(ids)


def _where(
    filters: SearchFilters,
    has_terms: bool,
    *,
    filter_indexes: bool = True,
    price_bands_beside: bool = True,
    words_lead: bool = False,
) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments, numbered from $1 (always the query text).
    price_bands_beside: see _key_conditions (False for a statement whose plan estimates
    the matches). Without filter_indexes, the filters are written so that no index can
    serve them (`b.price + 0`): for queries that must be driven by another index. With
    words_lead, so are the conditions that are not the index's keys (an exact price
    range): the words' index alone then serves the statement, whatever its plan."""
    args: list[Any] = [filters.text]
    placeholders: dict[str, str] = {}
    for name, _, value_of, _ in _FILTERS:
        value = value_of(filters)
        if value is not None:
            args.append(value)
            placeholders[name] = f"${len(args)}"
    conditions = _conditions(
        filters,
        placeholders,
        filter_indexes=filter_indexes,
        price_bands_beside=price_bands_beside,
        words_lead=words_lead,
    )
    return _in_cost_order(has_terms, conditions), args


_UNINDEXED = re.compile(r"(b\.(?:category_id|price))\b")


def match_conditions(filters: SearchFilters, has_terms: bool) -> tuple[str, str, list[Any]]:
    """For other statements over the page's matches (facets): the query's FROM item `q`,
    the WHERE clause over books `b` and `q`, and their arguments ($1 the text)."""
    where, args = _where(filters, has_terms)
    return _QUERY, where, args


async def planned_rows(pool: asyncpg.Pool, filters: SearchFilters, has_terms: bool) -> float:
    """The planner's estimate of the matches, from the column statistics (no row read)."""
    where, args = _where(filters, has_terms, price_bands_beside=False)
    sql = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM book_catalog.books b, {_QUERY} WHERE {where}"
    plan = await pool.fetchval(sql, *args)  # decoded by the pool's json codec
    return float(plan[0]["Plan"]["Plan Rows"])


def _fixed_where(filters: SearchFilters, has_terms: bool) -> str:
    """The same clause with search_total's fixed numbering ($2 categories ... $6 language)."""
    placeholders = {
        name: f"${position}"
        for name, _, value_of, position in _FILTERS
        if value_of(filters) is not None
    }
    return _in_cost_order(has_terms, _conditions(filters, placeholders, price_bands_beside=False))


def _in_cost_order(has_terms: bool, filter_conditions: list[str]) -> str:
    """A WHERE clause, its conditions in the order a row is best checked in. PostgreSQL
    checks them in the order written when their costs are equal, and every operator here
    costs 1; but a comparison takes nanoseconds, the words' match reads the book's vector
    (~2.5 us) and the index keys are built for the row (~3 us). A row read from the index
    skips all but the comparisons; a sampled row (search_total) does not: 'know' with a
    price range, 51 -> 23 ms for the 2 % sample."""
    compared = [c for c in filter_conditions if _KEYS not in c]
    keyed = [c for c in filter_conditions if _KEYS in c]
    words = ["b.search_vector @@ q.query"] if has_terms else []
    return " AND ".join(["b.status = 'active'", *compared, *words, *keyed])


def _order(sort: str, has_terms: bool) -> list[tuple[str, str]]:
    return _SORT_KEYS["popular" if sort == "relevance" and not has_terms else sort]


def _ranked_ids(
    where: str, keys: list[tuple[str, str]], limit: str, offset: str | None = None
) -> str:
    """Ids and sort keys (k0, k1, ...) of the matches in order, LIMIT/OFFSET applied."""
    inner_keys = ", ".join(f"{expr} AS k{i}" for i, (expr, _) in enumerate(keys))
    inner_order = ", ".join(f"{expr} {direction}" for expr, direction in keys)
    paging = f"LIMIT {limit}" + (f" OFFSET {offset}" if offset is not None else "")
    return f"""
            SELECT b.id, {inner_keys} FROM book_catalog.books b, {_QUERY}
             WHERE {where}
             ORDER BY {inner_order}, b.id {paging}"""


# Rank levels of one lexeme in one book (book_catalog.ranked_lexemes, migration 202511411):
# level -> the rank every book outside levels 1..level stays below. For a query of one
# lexeme, ts_rank with its default weights (D 0.1, C 0.2, B 0.4, A 1.0) and normalization 0
# is (w_m + sum over j != m of w_j / j^2) / zeta(2) over the lexeme's positions j = 1..n in
# the book, m the first of the heaviest weight, zeta(2) = pi^2 / 6. Hence, for a book
# outside the levels up to:
# 1 (an A and another position): at most one position, an A (1/zeta(2) = 0.608), or no A;
# 2 (an A): no A, at most 0.465 (m at j = 3 after two C, B after it all the way);
# 3 (a B): only C and D, at most 0.231 (a D, then C all the way);
# 4 (5+ positions, or 2+ with a D): at most four positions, all C: 0.173;
# 5 (4 C positions): at most three C: 0.165;   6 (3 C positions): at most two C: 0.152.
# When the N-th best book of levels 1..k ranks at or above RANK_LEVELS[k], the first N
# matches of the whole catalog are exactly those N books in that order: each level's books
# are read from a GIN index and only they are ranked (by ts_rank itself). The check makes
# the levels a shortcut that is never wrong; the bounds make it work.
RANK_LEVELS = {1: 0.62, 2: 0.60, 3: 0.24, 4: 0.175, 5: 0.170, 6: 0.165}


def _ranked_by_levels(
    filters: SearchFilters, lexeme: str, args: list[Any], limit: str, offset: str, gate: str
) -> str:
    """A one-word query's relevance order, from the highest rank levels that hold
    `limit + offset` books (the arguments for them are appended to args); nothing is read
    unless the `gate` condition holds."""
    # Same filters, same numbering as args; the levels' GIN index drives the scan (the
    # planner's estimate for a level is rough, and it chose a category's 15,000 books,
    # computing ranked_lexemes for each: 0.9 s, instead of the index's few hundred).
    where, _ = _where(filters, has_terms=False, filter_indexes=False)
    wanted = f"({limit}::int + {offset}::int)"
    keys = _SORT_KEYS["relevance"]
    tiers: list[str] = []
    parts: list[str] = []
    # A level is ranked only when every higher one proved too few.
    too_few = gate
    for level, bound in RANK_LEVELS.items():
        args.append([f"{lexeme}:{higher}" for higher in range(1, level + 1)])
        tier_where = (
            f"{where} AND book_catalog.ranked_lexemes(b.search_vector) && ${len(args)}::text[]"
        )
        name = f"level{level}"
        tiers.append(f"{name} AS MATERIALIZED ({_ranked_ids(tier_where + too_few, keys, wanted)})")
        enough = f"(SELECT count(*) >= {wanted} AND min(k0) >= {bound} FROM {name})"
        parts.append(f"SELECT * FROM {name} WHERE {enough}")
        too_few += f" AND NOT {enough}"
    everything, _ = _where(filters, has_terms=True)
    tiers.append(f"everything AS MATERIALIZED ({_ranked_ids(everything + too_few, keys, wanted)})")
    parts.append("SELECT * FROM everything")
    union = "\n             UNION ALL ".join(parts)
    return f"""{", ".join(tiers)},
        ranked AS ({union}),
        ordered_page AS (
            SELECT * FROM ranked ORDER BY k0 DESC, id LIMIT {limit} OFFSET {offset})"""


def _total_call(
    filters: SearchFilters,
    words: QueryWords,
    args: list[Any],
    exact_max: int,
    sample_rows: int,
    counted_above: bool = False,
) -> str:
    """A call of book_catalog.search_total (its arguments appended to args). The planner's
    estimate is taken for the total of one measured word with no filter."""
    first = len(args) + 1
    args += _filter_args(filters, words)
    args += [exact_max, sample_rows, words.measured and not filters.narrowed(), counted_above]
    types = [*_FILTER_ARG_TYPES, "int", "int", "bool", "bool"]
    params = ", ".join(f"${first + i}::{t}" for i, t in enumerate(types))
    return f"book_catalog.search_total({params})"


def _planned_call(filters: SearchFilters, words: QueryWords, args: list[Any]) -> str:
    """A call of book_catalog.search_planned: the planner's estimate of the matches, told
    every filter (its arguments appended to args)."""
    first = len(args) + 1
    args += _filter_args(filters, words)
    params = ", ".join(f"${first + i}::{t}" for i, t in enumerate(_FILTER_ARG_TYPES))
    return f"book_catalog.search_planned({params})"


# The leading parameters of search_total and search_planned: the fixed WHERE clause, the
# text and each filter's value (NULL when not given).
_FILTER_ARG_TYPES = ["text", "text", "int[]", "numeric", "numeric", "text", "text"]


def _filter_args(filters: SearchFilters, words: QueryWords) -> list[Any]:
    return [
        _fixed_where(filters, words.searchable),
        filters.text,
        _listed(filters.category_ids),
        filters.min_price,
        filters.max_price,
        filters.format,
        filters.language,
    ]


def _select_page(ctes: list[str], keys: list[tuple[str, str]], *, facets: bool = False) -> str:
    """The statement: the `total` row joined with the `page` rows' books, in order; with
    facets, `total.facets` on the first row (FACET_CTES are recursive)."""
    outer_order = ", ".join(f"page.k{i} {direction}" for i, (_, direction) in enumerate(keys))
    order = f"{outer_order}, page.id"
    facets_column = (
        f", CASE WHEN row_number() OVER (ORDER BY {order}) = 1 THEN total.facets END AS facets"
        if facets
        else ""
    )
    return f"""
        WITH {"RECURSIVE " if facets else ""}{", ".join(ctes)}
        SELECT total.total_count, total.estimated, {BOOK_COLUMNS}{facets_column}
          FROM total
          LEFT JOIN (page JOIN book_catalog.books b ON b.id = page.id) ON true
         ORDER BY {order}"""


def _matches_page(
    where: str,
    keys: list[tuple[str, str]],
    limit: str,
    offset: str,
    cap: int,
    gates: dict[str, str],
    also_read: str = "",
) -> list[str]:
    """CTEs reading up to `cap` matches once, in no order (a bitmap or sequential scan,
    never an index walk that may find nothing for long), one per name in `gates`, each read
    only when its gate holds; and `matches_page`, the page from them, sorted in memory.
    The sort keys are computed as the matches are read, relevance too: ranking a book whose
    row the scan holds costs ~3 us, finding it again by id to rank it ~6 us (3,519 matches
    of 'know' in a category, measured), and they are all ranked once all are read. Columns
    in `also_read` are read with the matches (the facets')."""
    inner_keys = ", ".join(f"{expr} AS k{i}" for i, (expr, _) in enumerate(keys))
    order = ", ".join(f"k{i} {direction}" for i, (_, direction) in enumerate(keys))
    read = f"b.id, {inner_keys}"
    if also_read:
        read += f", {also_read}"
    ctes = [
        f"""{name} AS MATERIALIZED (
            SELECT {read} FROM book_catalog.books b, {_QUERY}
             WHERE {where}{gate} LIMIT {cap})"""
        for name, gate in gates.items()
    ]
    found = " UNION ALL ".join(f"SELECT * FROM {name}" for name in gates)
    ctes.append(f"""matches_page AS (
            SELECT * FROM ({found}) m ORDER BY {order}, id LIMIT {limit} OFFSET {offset})""")
    return ctes


def small_search_sql(
    filters: SearchFilters,
    words: QueryWords,
    sort: str,
    offset: int,
    limit: int,
    exact_max: int,
    *,
    facets: bool = False,
) -> tuple[str, list[Any]]:
    """A search whose matches are few (by the planner, or by a known total): they are read
    once, up to exact_max + 1 of them, with their sort keys (and with facets, counted per
    facet from the same rows). When that is all of them they give the exact total and the
    page; otherwise the total comes back as exact_max + 1 with no book, and the search is
    to be run as a broad one. With words, the words' index leads whatever the plan: the
    statement may run with a generic plan (BookSearch.generic_pool)."""
    where, args = _where(
        filters, words.searchable, price_bands_beside=_many(words), words_lead=words.searchable
    )
    keys = _order(sort, words.searchable)
    args += [limit, offset]
    limit_param, offset_param = f"${len(args) - 1}", f"${len(args)}"
    ctes = _matches_page(
        where,
        keys,
        limit_param,
        offset_param,
        exact_max + 1,
        {"matches": ""},
        also_read=FACET_COLUMNS if facets else "",
    )
    all_read = f"(SELECT n FROM counted) <= {exact_max}"
    ctes += [
        "counted AS (SELECT count(*) AS n FROM matches)",
        f"page AS (SELECT * FROM matches_page WHERE {all_read})",
    ]
    facets_column = ""
    if facets:
        ctes.append(
            FACET_CTES.format(matches=f"(SELECT * FROM matches WHERE {all_read})", percent="NULL")
        )
        facets_column = ", (SELECT json_agg(f)::text FROM facet_rows f) AS facets"
    # search_total with a negative bound does nothing: it keeps the statement serial.
    ctes.append(f"""total AS (
            SELECT n AS total_count, false AS estimated{facets_column}
              FROM counted, {_total_call(filters, words, args, -1, 0)})""")
    return _select_page(ctes, keys, facets=facets), args


def broad_search_sql(
    filters: SearchFilters,
    words: QueryWords,
    sort: str,
    offset: int,
    limit: int,
    *,
    count_total: bool,
    exact_max: int = EXACT_TOTAL_MAX,
    sample_rows: int = SAMPLE_ROWS,
    counted_above: bool = False,
) -> tuple[str, list[Any]]:
    """A search of possibly many matches. With count_total, book_catalog.search_total runs
    first and the page follows what it found: an exact (small) total means few matches,
    read once and sorted in memory; an estimate means many, and the page is read in its
    order and stops (an index walk, or the rank levels of one word). Filters correlated
    with the words are what this guards against: a category where a common word never
    occurs walks the whole price index otherwise. Without count_total the total is known
    to be large and the page is read in order."""
    where, args = _where(filters, words.searchable, price_bands_beside=_many(words))
    keys = _order(sort, words.searchable)
    args += [limit, offset]
    limit_param, offset_param = f"${len(args) - 1}", f"${len(args)}"
    # search_total is called even when the total is known (bound -1: it returns NULLs at
    # once), as it is PARALLEL UNSAFE and so keeps the whole statement serial.
    bound = exact_max if count_total else -1
    call = _total_call(filters, words, args, bound, sample_rows, counted_above)
    # One word in relevance order: many matches are ranked from the rank levels, never all
    # of them. The first page comes from the levels whatever the total (its best books are
    # theirs: 'know' in a category, 12 ms with the total counted apart); a later page
    # mostly lies beyond them when the matches are few, and the levels' cumulative scans
    # then cost as much again as reading and ranking every match once (offset 200 there:
    # 40 -> 24 ms), so few matches are read once and ranked, as for the other sorts.
    ranked_lexeme = words.lexeme if sort == "relevance" else None
    if ranked_lexeme is not None and (offset == 0 or not count_total):
        ctes = [f"total AS (SELECT * FROM {call})"]
        ctes.append(_ranked_by_levels(filters, ranked_lexeme, args, limit_param, offset_param, ""))
        ctes.append("page AS (SELECT * FROM ordered_page)")
        return _select_page(ctes, keys), args
    if not count_total:
        ctes = [f"total AS (SELECT * FROM {call})"]
        ctes.append(f"page AS ({_ranked_ids(where, keys, limit_param, offset_param)})")
        return _select_page(ctes, keys), args
    # When the planner, told the filters, puts the matches at most at twice the bound, they
    # are read once (`early`), counted, and sorted for the page if they are all there;
    # otherwise search_total decides, and a total it finds exact is read once (`late`).
    small = f"(SELECT rows FROM planned) <= {2 * exact_max}"
    counted_small = f"((SELECT n FROM counted) <= {exact_max} AND {small})"
    early, late, matches_page = _matches_page(
        where,
        keys,
        limit_param,
        offset_param,
        exact_max + 1,
        {
            "early": f" AND {small}",
            "late": f" AND NOT {small} AND NOT (SELECT estimated FROM total)",
        },
    )
    # Many matches: the page is read in its order (from the rank levels for one word).
    estimated = " AND (SELECT estimated FROM total)"
    if ranked_lexeme is not None:
        ordered_page = _ranked_by_levels(
            filters, ranked_lexeme, args, limit_param, offset_param, estimated
        )
    else:
        ordered = _ranked_ids(where + estimated, keys, limit_param, offset_param)
        ordered_page = f"ordered_page AS ({ordered})"
    ctes = [
        f"planned AS (SELECT {_planned_call(filters, words, args)} AS rows)",
        early,
        "counted AS (SELECT count(*) AS n FROM early)",
        f"""total AS (
            SELECT n AS total_count, false AS estimated FROM counted WHERE {counted_small}
            UNION ALL
            SELECT * FROM {call} WHERE NOT {counted_small})""",
        late,  # reads `total`: after it
        matches_page,
        ordered_page,
        """page AS (
            SELECT * FROM matches_page WHERE NOT (SELECT estimated FROM total)
            UNION ALL SELECT * FROM ordered_page)""",
    ]
    return _select_page(ctes, keys), args


def round_estimate(value: float) -> int:
    """Two significant digits: 421,150 -> 420,000. An estimate should not look exact."""
    if value < 100:
        return round(value)
    magnitude = 10 ** (len(str(int(value))) - 2)
    return int(round(value / magnitude) * magnitude)


def _total_of(count: int, estimated: bool) -> Total:
    return Total(round_estimate(count), True) if estimated else Total(count, False)


async def search_total(
    pool: asyncpg.Pool,
    filters: SearchFilters,
    has_terms: bool,
    *,
    sample_rows: int = SAMPLE_ROWS,
    exact_below: int = EXACT_TOTAL_MAX + 1,
) -> Total:
    """The total alone (book_catalog.search_total): exact below exact_below matches."""
    args: list[Any] = []
    words = QueryWords(searchable=has_terms)
    call = _total_call(filters, words, args, exact_below - 1, sample_rows)
    row = await pool.fetchrow(f"SELECT * FROM {call}", *args)
    assert row is not None
    return _total_of(int(row["total_count"]), bool(row["estimated"]))


class BookSearch:
    """Runs searches: what a query's words are (remembered), then one statement for the
    page and its total.

    `pool` plans each statement for its arguments (plan_cache_mode=force_custom_plan): the
    broad statements' plans depend on how many books the words and filters match.
    `generic_pool`, when given, keeps one generic plan per statement: the small
    statements with words run there, since the words' index leads them whatever the
    arguments (small_search_sql), and planning them anew cost more than running them
    (measured at 1M books: a rare word 1.6 -> 1.0 ms, a name 1.3 -> 0.6 ms)."""

    # The words of a text depend on the text alone; popular queries repeat, so they are
    # remembered (a round trip saved on every cold search).
    WORDS_CACHE_SIZE = 4096

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        generic_pool: asyncpg.Pool | None = None,
        exact_total_max: int = EXACT_TOTAL_MAX,
        sample_rows: int = SAMPLE_ROWS,
    ) -> None:
        self.pool = pool
        self.generic_pool = generic_pool or pool
        self.exact_total_max = exact_total_max
        self.sample_rows = sample_rows
        self._words: dict[str, QueryWords] = {}
        self._analyses: dict[str, asyncio.Future[QueryWords]] = {}

    async def words(self, text: str) -> QueryWords:
        if not text.strip():
            return NO_WORDS
        known = self._words.get(text)
        if known is not None:
            return known
        # Concurrent searches of a new text share one analysis.
        pending = self._analyses.get(text)
        if pending is None:
            pending = asyncio.ensure_future(self._analyze(text))
            self._analyses[text] = pending
            pending.add_done_callback(lambda _: self._analyses.pop(text, None))
        return await asyncio.shield(pending)

    async def _analyze(self, text: str) -> QueryWords:
        row = await self.pool.fetchrow(
            "SELECT * FROM book_catalog.search_words($1, $2)", text, float(self.exact_total_max)
        )
        assert row is not None
        words = QueryWords(
            bool(row["searchable"]), row["lexeme"], bool(row["measured"]), float(row["planned"])
        )
        if len(self._words) >= self.WORDS_CACHE_SIZE:
            self._words.clear()
        self._words[text] = words
        return words

    def reads_matches_once(self, words: QueryWords, known_total: Total | None) -> bool:
        """Whether a search is expected to find few matches (by its known total, or the
        planner's estimate of its words): they are then read at once, page and facets."""
        if known_total is not None:
            return not known_total.estimate
        return words.searchable and words.planned <= 2 * self.exact_total_max

    async def search(
        self,
        filters: SearchFilters,
        words: QueryWords,
        sort: str,
        offset: int,
        limit: int,
        *,
        known_total: Total | None = None,
        facets: bool = False,
    ) -> SearchPage:
        """The page (up to `limit` books from `offset`) and its total, unless known_total
        gives it already (then SearchPage.total is None); with `facets`, the facets' rows
        too when the matches are few enough to be counted with the page (SearchPage)."""
        exact_max = self.exact_total_max
        few = self.reads_matches_once(words, known_total)
        if few:
            sql, args = small_search_sql(
                filters, words, sort, offset, limit, exact_max, facets=facets
            )
            pool = self.generic_pool if words.searchable else self.pool
            rows = await pool.fetch(sql, *args)
            counted = int(rows[0]["total_count"])
            if counted <= exact_max:
                total = None if known_total is not None else Total(counted, estimate=False)
                facet_rows = json.loads(rows[0]["facets"] or "[]") if facets else None
                return SearchPage(_books_of(rows), total, facet_rows)
            # More than the planner thought: a broad statement follows.
        sql, args = broad_search_sql(
            filters,
            words,
            sort,
            offset,
            limit,
            count_total=known_total is None or not known_total.estimate,
            exact_max=exact_max,
            sample_rows=self.sample_rows,
            counted_above=few,  # the small statement counted past exact_max
        )
        rows = await self.pool.fetch(sql, *args)
        if known_total is not None and known_total.estimate:
            return SearchPage(_books_of(rows), None)
        return SearchPage(
            _books_of(rows), _total_of(int(rows[0]["total_count"]), bool(rows[0]["estimated"]))
        )


def _books_of(rows: list[asyncpg.Record]) -> list[catalog_pb2.Book]:
    return [book_from_row(row) for row in rows if row["id"] is not None]
