"""Completions for SuggestBooks from book_catalog.suggestions (migration 202511401).

The table holds one normalized text per title, author name (two orders) and category,
kept current by triggers; popularity is refreshed with the popular-books job. A prefix is
answered with a bounded amount of work whatever its breadth: the rows of its byte range
(COLLATE "C" index) are read up to RANGE_CAP and sorted by popularity; when there are more,
the prefix is broad, and the popularity index is walked from the top instead, filtered by
the prefix, which then finds its rows within about limit x catalog / RANGE_CAP entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2

KINDS: dict[int, str] = {
    catalog_pb2.SUGGESTION_KIND_TITLE: "title",
    catalog_pb2.SUGGESTION_KIND_AUTHOR: "author",
    catalog_pb2.SUGGESTION_KIND_CATEGORY: "category",
}
_KIND_NUMBERS = {name: number for number, name in KINDS.items()}
# Popularity ties: kinds in enum order, then ids.
_KIND_ORDER = "CASE s.kind WHEN 'title' THEN 1 WHEN 'author' THEN 2 ELSE 3 END"

RANGE_CAP = 5000
MAX_PREFIX_CHARS = 100
MAX_PREFIX_WORDS = 3
DEFAULT_LIMIT = 10
MAX_LIMIT = 20

# The prefix's bounds: itself, and itself followed by the highest code point (every
# normalized text that starts with it sorts in between in byte order).
_NORM = "book_catalog.suggest_norm($1::text)"


def _kind_sql(kind: str) -> str:
    """One kind's best rows, at most $2 of them (each author may appear twice here, once
    per order of names; the caller keeps the first). Index-only: no text read yet."""
    return f"""
        (WITH r AS MATERIALIZED (
             SELECT s.kind, s.ref_id, s.variant, s.popularity FROM book_catalog.suggestions s
              WHERE s.kind = '{kind}' AND s.norm >= {_NORM} AND s.norm < {_NORM} || chr(1114111)
              LIMIT {RANGE_CAP + 1}
         ), n AS (SELECT count(*) AS rows FROM r)
         SELECT r.kind, r.ref_id, r.variant, r.popularity FROM r
          WHERE (SELECT rows FROM n) <= {RANGE_CAP}
         UNION ALL
         (SELECT s.kind, s.ref_id, s.variant, s.popularity FROM book_catalog.suggestions s
           WHERE (SELECT rows FROM n) > {RANGE_CAP} AND s.kind = '{kind}'
             AND starts_with(s.norm, {_NORM})
           ORDER BY s.popularity DESC, s.ref_id LIMIT $2))"""


def suggest_sql(kinds: Sequence[str]) -> str:
    branches = " UNION ALL ".join(_kind_sql(kind) for kind in kinds)
    return f"""
        SELECT t.kind, t.ref_id, t.text, best.popularity
          FROM (SELECT s.kind, s.ref_id, s.variant, s.popularity FROM ({branches}) s
                 ORDER BY s.popularity DESC, {_KIND_ORDER}, s.ref_id LIMIT $2) best
          JOIN book_catalog.suggestions t USING (kind, ref_id, variant)
         ORDER BY best.popularity DESC, {_KIND_ORDER.replace("s.kind", "t.kind")}, t.ref_id"""


@dataclass(frozen=True)
class SuggestQuery:
    prefix: str
    kinds: tuple[str, ...]
    limit: int


async def suggest(pool: asyncpg.Pool, query: SuggestQuery) -> list[catalog_pb2.Suggestion]:
    # Twice the limit: an author matched under both orders of names counts once.
    rows = await pool.fetch(suggest_sql(query.kinds), query.prefix, query.limit * 2)
    seen: set[tuple[str, int]] = set()
    suggestions = []
    for row in rows:
        key = (row["kind"], row["ref_id"])
        if key in seen:
            continue
        seen.add(key)
        suggestions.append(
            catalog_pb2.Suggestion(
                kind=_KIND_NUMBERS[row["kind"]],  # type: ignore[arg-type]
                text=row["text"],
                ref_id=row["ref_id"],
                popularity=row["popularity"],
            )
        )
    return suggestions[: query.limit]
