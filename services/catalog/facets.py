"""SearchBooks' facets: the matches counted per top-level category, format, language and
price band, for the query and every filter of the page (the category filter included).

Counted exactly when the matches are few (up to the exact-total threshold, as the total),
else estimated from a block sample of the catalog scaled to its size and flagged. Every
count comes from one statement: the matches are grouped by category, format, language and
price band at once (GROUPING SETS), and categories are folded to their roots in the same
statement (a recursive walk of the category tree: categories are few, ~0.3 ms).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2
from services.catalog.search import (
    FACET_COLUMNS,
    FACET_CTES,
    PRICE_BAND_EDGES,
    SearchFilters,
    exact_total_max_from_env,
    match_conditions,
    planned_rows,
    round_estimate,
)
from services.catalog.validation import FORMATS, decimal_to_money

# The price bands, in the catalog's currency: min inclusive, max exclusive, the last open
# (band i of search.PRICE_BAND).
PRICE_BANDS: tuple[tuple[Decimal, Decimal | None], ...] = tuple(
    zip((Decimal(0), *PRICE_BAND_EDGES), (*PRICE_BAND_EDGES, None), strict=True)
)

_FORMAT_ENUMS = {name: number for number, name in FORMATS.items()}


# The same threshold as the total's: up to this many matches, counts are exact.
EXACT_TOTAL_MAX = exact_total_max_from_env()
# A sample is sized to hold about SAMPLE_MATCHES matches and reads at most
# SAMPLE_MAX_BOOKS books. Measured on 1M books with English descriptions (2 cores, busy):
# a sampled book costs ~8 us (its search vector is read from TOAST and matched), so a
# broad word's 2,000 matches take ~50-70 ms and facets of 5% or more are within ~8% on
# average (a 1,000-match sample: ~35 ms, ~9%); a mid-sized query (10,000-50,000 matches)
# reads the 10,000 books (~80 ms) for a few hundred matches, coarser counts.
SAMPLE_MATCHES = 2_000
SAMPLE_MAX_BOOKS = 10_000


# The facet rows of the matches (FACET_CTES). Only matches are grouped: grouping every
# sampled book as well (to scale by the books actually read) measured twice as slow as the
# sample's scan itself.
_FACETS = "WITH RECURSIVE {ctes}" + FACET_CTES + "\nSELECT * FROM facet_rows"


@dataclass
class FacetCounts:
    """Counts over the matches read: all of them, some of them, or those of a sample."""

    categories: dict[int, tuple[str, int]] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    bands: dict[int, int] = field(default_factory=dict)
    matches: int = 0
    # The share of the catalog read: 100 unless sampled.
    percent: float = 100.0

    @property
    def estimated(self) -> bool:
        return self.percent < 100

    def scaled_matches(self) -> float:
        return self.matches * 100.0 / self.percent

    def scaled(self, n: int) -> int:
        """A count scaled to the whole catalog (two significant digits when sampled)."""
        if not self.estimated:
            return n
        return max(1, round_estimate(n * 100.0 / self.percent))


def _matches(filters: SearchFilters, has_terms: bool, books: str) -> tuple[str, list[Any]]:
    """The facet columns of the matches among `books` (`b`), and the arguments."""
    query, where, args = match_conditions(filters, has_terms)
    return f"SELECT {FACET_COLUMNS} FROM {books}, {query} WHERE {where}", args


def _counts(rows: Iterable[Mapping[str, Any]]) -> FacetCounts:
    counts = FacetCounts()
    for row in rows:
        n = int(row["n"])
        match row["facet"]:
            case "all":
                counts.matches = n
                if row["percent"] is not None:
                    counts.percent = float(row["percent"])
            case "category":
                counts.categories[int(row["value"])] = (row["name"], n)
            case "format":
                counts.formats[row["value"]] = n
            case "language":
                counts.languages[row["value"]] = n
            case "band":
                counts.bands[int(row["value"])] = n
    return counts


async def count_matches(
    pool: asyncpg.Pool, filters: SearchFilters, has_terms: bool, limit: int | None
) -> FacetCounts:
    """Exact counts over the matches, reading at most `limit` of them: when that many were
    read, there may be more and the counts are of an arbitrary part of them."""
    matches, args = _matches(filters, has_terms, "book_catalog.books b")
    if limit is not None:
        args.append(limit)
        matches += f" LIMIT ${len(args)}"
    sql = _FACETS.format(ctes="", matches=f"({matches})", percent="NULL")
    return _counts(await pool.fetch(sql, *args))


# The sample's share of the catalog: enough books to hold about `target` matches given
# `expected` in all, at least `target` books and at most `most`; the whole catalog when it
# is small or was never analyzed (reltuples -1).
_SAMPLE_SIZE = """size AS MATERIALIZED (
    SELECT least(100, 100.0 * least(greatest({target} * reltuples / {expected}, {target}),
                                    {most}) / greatest(reltuples, 1))::real AS percent
      FROM pg_class WHERE oid = 'book_catalog.books'::regclass
),
"""
_SAMPLED_BOOKS = (
    "book_catalog.books b TABLESAMPLE SYSTEM ((SELECT percent FROM size)) REPEATABLE (0)"
)


async def sample_matches(
    pool: asyncpg.Pool,
    filters: SearchFilters,
    has_terms: bool,
    *,
    expected_matches: float,
    target_hits: int,
    max_rows: int,
) -> FacetCounts:
    """Counts over a repeatable block sample of the catalog sized to hold about
    `target_hits` matches: the bound on the books read keeps a mid-sized query's sample
    cheap, at the price of precision. The same sample every time, so the counts do not
    change from page to page."""
    matches, args = _matches(filters, has_terms, _SAMPLED_BOOKS)
    args += [target_hits, max(expected_matches, 1.0), max_rows]
    size = _SAMPLE_SIZE.format(
        target=f"${len(args) - 2}", expected=f"${len(args) - 1}", most=f"${len(args)}"
    )
    sql = _FACETS.format(ctes=size, matches=f"({matches})", percent="(SELECT percent FROM size)")
    return _counts(await pool.fetch(sql, *args))


async def search_facets(
    pool: asyncpg.Pool,
    filters: SearchFilters,
    has_terms: bool,
    *,
    exact_max: int | None = None,
) -> catalog_pb2.SearchFacets:
    """The facets of a search. Cost goes by the planner's estimate of the matches: few are
    counted (reading at most exact_max + 1 of them), many are sampled; a sample that finds
    them few after all (the planner was wrong) has them counted."""
    limit = EXACT_TOTAL_MAX if exact_max is None else exact_max
    counted: FacetCounts | None = None
    expected = await planned_rows(pool, filters, has_terms)
    if expected <= limit:
        counted = await count_matches(pool, filters, has_terms, limit + 1)
        if counted.matches <= limit:
            return _facets(counted)
        expected = max(expected, counted.matches)
    sampled = await sample_matches(
        pool,
        filters,
        has_terms,
        expected_matches=expected,
        target_hits=SAMPLE_MATCHES,
        max_rows=SAMPLE_MAX_BOOKS,
    )
    if counted is None and sampled.estimated and sampled.scaled_matches() <= limit:
        counted = await count_matches(pool, filters, has_terms, limit + 1)
        if counted.matches <= limit:
            return _facets(counted)
    # A sample of the whole catalog is exact. A sample that found no match when there are
    # more than exact_max (a rare query in a huge catalog) has no facet to show.
    return _facets(sampled)


def counted_facets(rows: Iterable[Mapping[str, Any]]) -> catalog_pb2.SearchFacets:
    """The facets of rows counted with a search's page (SearchPage.facet_rows)."""
    return _facets(_counts(rows))


def _facets(counts: FacetCounts) -> catalog_pb2.SearchFacets:
    """The response's facets; a sample's counts scaled to the catalog."""
    count = counts.scaled
    facets = catalog_pb2.SearchFacets(counts_are_estimates=counts.estimated)
    for category_id, (name, n) in counts.categories.items():
        facets.categories.add(category_id=category_id, name=name, count=count(n))
    for name, n in counts.formats.items():
        facets.formats.add(format=_FORMAT_ENUMS[name], count=count(n))  # type: ignore[arg-type]
    for code, n in counts.languages.items():
        facets.languages.add(language_code=code, count=count(n))
    for band, n in sorted(counts.bands.items()):
        low, high = PRICE_BANDS[band]
        facet = facets.price_bands.add(min_price=decimal_to_money(low), count=count(n))
        if high is not None:
            facet.max_price.CopyFrom(decimal_to_money(high))
    _order(facets)
    return facets


def _order(facets: catalog_pb2.SearchFacets) -> None:
    """Each list by count, most first, ties by value (categories by name); price bands
    keep band order."""
    facets.categories.sort(key=lambda c: (-c.count, c.name, c.category_id))
    facets.formats.sort(key=lambda f: (-f.count, f.format))
    facets.languages.sort(key=lambda lang: (-lang.count, lang.language_code))


def scaled_to_total(facets: catalog_pb2.SearchFacets, total: int) -> catalog_pb2.SearchFacets:
    """Estimated facets brought to the search's total: the sample's shares hold, the scale
    comes from the total (every match has one language, so the languages sum to it). A
    block sample's own scale is off by its luck in books per block (+4-6% measured at 1M
    books, the same every time); the total's is within 5%, and the two then agree."""
    sampled = sum(language.count for language in facets.languages)
    if not facets.counts_are_estimates or sampled == 0 or total <= 0:
        return facets

    def scale(n: int) -> int:
        return max(1, round_estimate(n * total / sampled))

    scaled = catalog_pb2.SearchFacets()
    scaled.CopyFrom(facets)
    for category in scaled.categories:
        category.count = scale(category.count)
    for fmt in scaled.formats:
        fmt.count = scale(fmt.count)
    for language in scaled.languages:
        language.count = scale(language.count)
    for band in scaled.price_bands:
        band.count = scale(band.count)
    _order(scaled)
    return scaled
