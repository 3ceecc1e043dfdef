"""SearchBooks' facets: counts per top-level category, format, language and price band for
the query and every filter, against counts made here from the books created (exact), and
against a plain GROUP BY on a seeded catalog when the threshold is lowered (estimated)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from services.catalog.demo import seed_catalog
from tests.conftest import ServiceSpawner
from tests.factories import book, usd, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

HARDCOVER, PAPERBACK, EBOOK = (
    pb.BOOK_FORMAT_HARDCOVER,
    pb.BOOK_FORMAT_PAPERBACK,
    pb.BOOK_FORMAT_EBOOK,
)
# (min, max) in cents per band; the last one is open.
BANDS = [(0, 1000), (1000, 2000), (2000, 3500), (3500, 5000), (5000, None)]


def band_of(cents: int) -> int:
    return next(i for i, (low, high) in enumerate(BANDS) if high is None or low <= cents < high)


async def category(catalog: CatalogServiceAsyncStub, name: str, parent: int = 0) -> pb.Category:
    request = pb.CreateCategoryRequest(category=pb.Category(name=name, parent_category_id=parent))
    return (await catalog.CreateCategory(request)).category


def expected_facets(books: list[dict[str, Any]], roots: dict[int, pb.Category]) -> pb.SearchFacets:
    """The facets of `books`, counted here: each category's root from `roots`, lists by
    count then value, bands in band order, zero counts left out."""
    by_root = Counter(roots[b["category_id"]].id for b in books if b.get("category_id"))
    names = {c.id: c.name for c in roots.values()}
    formats = Counter(b["format"] for b in books)
    languages = Counter(b["language_code"] for b in books)
    bands = Counter(band_of(b["price"].minor_units) for b in books)
    facets = pb.SearchFacets()
    for root, n in sorted(by_root.items(), key=lambda item: (-item[1], names[item[0]])):
        facets.categories.add(category_id=root, name=names[root], count=n)
    for fmt, n in sorted(formats.items(), key=lambda item: (-item[1], item[0])):
        facets.formats.add(format=fmt, count=n)
    for code, n in sorted(languages.items(), key=lambda item: (-item[1], item[0])):
        facets.languages.add(language_code=code, count=n)
    for band in sorted(bands):
        low, high = BANDS[band]
        facet = facets.price_bands.add(min_price=usd(low), count=bands[band])
        if high is not None:
            facet.max_price.CopyFrom(usd(high))
    return facets


async def faceted(catalog: CatalogServiceAsyncStub, query: str, **options: Any) -> pb.SearchFacets:
    response = await catalog.SearchBooks(
        pb.SearchBooksRequest(query=query, include_facets=True, page_size=5, **options)
    )
    assert response.HasField("facets")
    return response.facets


async def test_facets_are_exact_counts_of_the_matches_under_every_filter(
    catalog: CatalogServiceAsyncStub,
) -> None:
    tag = word()
    # Two trees: Zeta > Middle > Leaf, and Alpha. Roots are named so a tie shows the order.
    zeta = await category(catalog, f"Zeta {tag}")
    middle = await category(catalog, f"Middle {tag}", zeta.id)
    leaf = await category(catalog, f"Leaf {tag}", middle.id)
    alpha = await category(catalog, f"Alpha {tag}")
    roots = {leaf.id: zeta, middle.id: zeta, zeta.id: zeta, alpha.id: alpha}
    # Band edges: 9.99 is under 10, 10.00 starts 10-20, 49.99 is 35-50, 50.00 is 50 and over.
    books: list[dict[str, Any]] = [
        dict(category_id=leaf.id, format=PAPERBACK, language_code="en", price=usd(999)),
        dict(category_id=leaf.id, format=PAPERBACK, language_code="en", price=usd(1000)),
        dict(category_id=middle.id, format=HARDCOVER, language_code="de", price=usd(1999)),
        dict(category_id=zeta.id, format=EBOOK, language_code="fr", price=usd(5000)),
        dict(category_id=alpha.id, format=HARDCOVER, language_code="en", price=usd(4999)),
        dict(category_id=alpha.id, format=PAPERBACK, language_code="de", price=usd(999)),
        dict(category_id=alpha.id, format=HARDCOVER, language_code="en", price=usd(12000)),
        dict(category_id=alpha.id, format=EBOOK, language_code="en", price=usd(3500)),
        dict(format=HARDCOVER, language_code="es", price=usd(1000)),  # no category
    ]
    for i, fields in enumerate(books):
        await catalog.CreateBook(pb.CreateBookRequest(book=book(f"Vol {i} {tag}", **fields)))
    # Not a match: inactive.
    await catalog.CreateBook(
        pb.CreateBookRequest(
            book=book(f"Gone {tag}", status=pb.BOOK_STATUS_INACTIVE, category_id=alpha.id)
        )
    )

    everything = expected_facets(books, roots)
    assert await faceted(catalog, tag) == everything
    # Spelled out once: a 4-4 tie of roots goes by name, formats 4-3-2 (no audiobook),
    # no book in 20-35: that band is left out.
    assert [(c.name, c.count) for c in everything.categories] == [
        (f"Alpha {tag}", 4),
        (f"Zeta {tag}", 4),
    ]
    assert [f.format for f in everything.formats] == [HARDCOVER, PAPERBACK, EBOOK]
    assert [(b.min_price.minor_units, b.count) for b in everything.price_bands] == [
        (0, 2),
        (1000, 3),
        (3500, 2),
        (5000, 2),
    ]
    assert not everything.counts_are_estimates

    def only(**wanted: Any) -> list[dict[str, Any]]:
        return [b for b in books if all(b.get(k) in v for k, v in wanted.items())]

    # Every filter narrows the counts as it narrows the page.
    assert await faceted(catalog, tag, format=HARDCOVER) == expected_facets(
        only(format=[HARDCOVER]), roots
    )
    assert await faceted(catalog, tag, language_code="de") == expected_facets(
        only(language_code=["de"]), roots
    )
    in_range = [b for b in books if 1000 <= b["price"].minor_units <= 4999]
    assert await faceted(catalog, tag, min_price=usd(1000), max_price=usd(4999)) == expected_facets(
        in_range, roots
    )
    # A category filter counts its subtree, under the subtree's root.
    assert await faceted(catalog, tag, category_id=middle.id) == expected_facets(
        only(category_id=[middle.id, leaf.id]), roots
    )
    # Browsing (no search words, or only stop words) counts the catalog under the filters.
    in_zeta = only(category_id=[zeta.id, middle.id, leaf.id])
    assert await faceted(catalog, "", category_id=zeta.id) == expected_facets(in_zeta, roots)
    assert await faceted(catalog, "the", category_id=zeta.id) == expected_facets(in_zeta, roots)
    # Nothing found: no facet at all.
    assert await faceted(catalog, tag, language_code="it") == pb.SearchFacets()


async def test_facets_only_when_asked_and_cached_apart(catalog: CatalogServiceAsyncStub) -> None:
    tag = word()
    root = await category(catalog, f"Root {tag}")
    for i in range(3):
        await catalog.CreateBook(
            pb.CreateBookRequest(book=book(f"Part {i} {tag}", category_id=root.id))
        )

    async def search(facets: bool, token: str = "") -> pb.SearchBooksResponse:
        request = pb.SearchBooksRequest(
            query=tag, include_facets=facets, page_size=2, page_token=token
        )
        return await catalog.SearchBooks(request)

    plain = await search(False)
    assert not plain.HasField("facets")
    with_facets = await search(True)  # same page, cached without facets: not reused
    assert with_facets.HasField("facets")
    assert [(c.name, c.count) for c in with_facets.facets.categories] == [(root.name, 3)]
    assert not (await search(False)).HasField("facets")
    assert [b.id for b in with_facets.books] == [b.id for b in plain.books]
    # The page token does not depend on facets: facets on the first page only.
    rest = await search(False, with_facets.next_page_token)
    assert len(rest.books) == 1 and not rest.HasField("facets")

    # A renamed category shows its new name at once (the rename ends cached searches).
    renamed = f"Renamed {tag}"
    await catalog.UpdateCategory(
        pb.UpdateCategoryRequest(
            category=pb.Category(id=root.id, name=renamed), update_mask=FieldMask(paths=["name"])
        )
    )
    assert [c.name for c in (await search(True)).facets.categories] == [renamed]


async def exact_counts(dsn: str, query: str) -> dict[str, Counter[Any]]:
    """The matches grouped plainly, with each category's root looked up here."""
    conn = await asyncpg.connect(dsn)
    try:
        parents = {
            r["id"]: r["parent_category_id"]
            for r in await conn.fetch("SELECT id, parent_category_id FROM book_catalog.categories")
        }
        sql = (
            "SELECT category_id, format, language_code, price, count(*) AS n"
            " FROM book_catalog.books WHERE status = 'active'"
        )
        if query:
            sql += " AND search_vector @@ websearch_to_tsquery('english', $1)"
        rows = await conn.fetch(sql + " GROUP BY 1, 2, 3, 4", *([query] if query else []))
    finally:
        await conn.close()

    def root(category_id: int) -> int:
        while parents[category_id] is not None:
            category_id = parents[category_id]
        return category_id

    counts: dict[str, Counter[Any]] = {k: Counter() for k in ("category", "format", "language")}
    counts["band"] = Counter()
    for row in rows:
        if row["category_id"] is not None:
            counts["category"][root(row["category_id"])] += row["n"]
        if row["format"] is not None:
            counts["format"][row["format"]] += row["n"]
        counts["language"][row["language_code"]] += row["n"]
        counts["band"][band_of(int(row["price"] * 100))] += row["n"]
    return counts


def facet_counts(facets: pb.SearchFacets) -> dict[str, Counter[Any]]:
    names = {
        number: name.removeprefix("BOOK_FORMAT_").lower() for name, number in pb.BookFormat.items()
    }
    return {
        "category": Counter({c.category_id: c.count for c in facets.categories}),
        "format": Counter({names[f.format]: f.count for f in facets.formats}),
        "language": Counter({lang.language_code: lang.count for lang in facets.languages}),
        "band": Counter({band_of(b.min_price.minor_units): b.count for b in facets.price_bands}),
    }


async def test_broad_facets_are_estimated_from_a_sample_and_flagged(
    spawn_service: ServiceSpawner, catalog_dsn: str, tmp_path: Path
) -> None:
    # A seeded catalog of its own (10,000 books, with a cache of its own), searched by a
    # catalog that counts exactly only up to 1,500 matches: samples of ~2,000 matches.
    await seed_catalog(catalog_dsn, 10_000, seed=3, progress=False)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        await conn.execute("ANALYZE book_catalog.books")
        stats = await conn.fetch(
            "SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM book_catalog.books "
            "WHERE status = ''active''') WHERE length(word) > 3 ORDER BY ndoc DESC, word"
        )
    finally:
        await conn.close()
    common = next(r["word"] for r in stats if r["ndoc"] > 3000)
    narrow = next(r["word"] for r in stats if 20 <= r["ndoc"] <= 100)
    overrides = {"CLOUDSHELF_CATALOG_SEARCH_EXACT_TOTAL_MAX": "1500"}
    async with spawn_service.own_catalog(catalog_dsn, tmp_path, **overrides) as catalog:
        for query in (common, ""):  # a common word, and browsing the whole catalog
            facets = await faceted(catalog, query)
            assert facets.counts_are_estimates
            exact = await exact_counts(catalog_dsn, query)
            estimated = facet_counts(facets)
            matches = sum(exact["language"].values())
            for kind, counts in exact.items():
                for value, n in counts.items():
                    if n >= matches / 10:  # the larger facets: within 25%
                        assert abs(estimated[kind][value] - n) <= 0.25 * n, (kind, value)
            # An estimate does not look exact: two significant digits.
            assert all(f.count % 10 == 0 for f in facets.languages if f.count >= 100)
            # The same sample each time: the counts do not change between calls.
            assert await faceted(catalog, query, sort=pb.SEARCH_SORT_PRICE_ASC) == facets
        # Under the threshold: exact, equal to the plain GROUP BY.
        facets = await faceted(catalog, narrow)
        assert not facets.counts_are_estimates
        exact = await exact_counts(catalog_dsn, narrow)
        assert facet_counts(facets) == {k: +v for k, v in exact.items()}
