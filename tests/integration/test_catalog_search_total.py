"""SearchBooks' total: exact for small result sets, estimated from a block sample for
large ones (thresholds lowered here so that a 2,000-book catalog has both kinds)."""

from __future__ import annotations

import asyncpg

from cloudshelf.runtime.stores import init_postgres_connection
from services.catalog.demo import seed_catalog
from services.catalog.search import SearchFilters, search_total


def text_filter(text: str) -> SearchFilters:
    return SearchFilters(text, None, None, None, None, None)


async def test_large_totals_are_estimated_small_ones_counted(catalog_dsn: str) -> None:
    await seed_catalog(catalog_dsn, 2000, seed=3, progress=False)
    pool = await asyncpg.create_pool(
        catalog_dsn, min_size=1, max_size=2, init=init_postgres_connection
    )
    assert pool is not None
    try:
        await pool.execute("ANALYZE book_catalog.books")
        stats = await pool.fetch(
            "SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM book_catalog.books "
            "WHERE status = ''active''') WHERE length(word) > 3 ORDER BY ndoc DESC, word"
        )
        common = stats[0]["word"]
        rare = next(row["word"] for row in stats if row["ndoc"] == 3)

        async def exact(word: str) -> int:
            return int(
                await pool.fetchval(
                    "SELECT count(*) FROM book_catalog.books WHERE status = 'active'"
                    " AND search_vector @@ to_tsquery('english', $1)",
                    word,
                )
            )

        # Sampling about 600 of the 2,000 books: a common word's total is an estimate.
        total = await search_total(
            pool, text_filter(common), True, sample_rows=600, exact_below=100
        )
        assert total.estimate
        assert abs(total.count - await exact(common)) <= 0.3 * await exact(common)
        assert total.count % 10 == 0  # two significant digits: it does not look exact
        # The same sample every time: the total does not change from page to page.
        again = await search_total(
            pool, text_filter(common), True, sample_rows=600, exact_below=100
        )
        assert again == total

        # A total the sample puts below the threshold is counted exactly.
        total = await search_total(pool, text_filter(rare), True, sample_rows=600, exact_below=100)
        assert (total.count, total.estimate) == (3, False)
        # A sample as large as the catalog is the catalog: exact.
        total = await search_total(pool, text_filter(common), True)
        assert (total.count, total.estimate) == (await exact(common), False)
    finally:
        await pool.close()
