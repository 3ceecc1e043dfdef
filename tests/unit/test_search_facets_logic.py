"""Facets' pure parts: a sample's counts scaled to the catalog, then to the search's total,
the order of every list after scaling, and the price bands (shared with the index)."""

from __future__ import annotations

from decimal import Decimal

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from services.catalog.facets import PRICE_BANDS, FacetCounts, _facets, scaled_to_total
from services.catalog.search import (
    PRICE_BAND_EDGES,
    PRICE_BANDS_BESIDE_FROM,
    QueryWords,
    SearchFilters,
    _fixed_where,
    price_in_whole_bands,
    small_search_sql,
)


def sampled() -> FacetCounts:
    """A 2 percent sample: 300 matches of about 15,000."""
    return FacetCounts(
        categories={7: ("Zoology", 104), 5: ("History", 100), 3: ("Art", 100)},
        formats={"paperback": 200, "ebook": 100},
        languages={"en": 240, "fr": 30, "de": 30},
        bands={4: 150, 0: 150},
        matches=300,
        percent=2.0,
    )


def test_a_samples_counts_are_scaled_to_the_catalog_with_two_significant_digits() -> None:
    facets = _facets(sampled())
    assert facets.counts_are_estimates
    # 104, 100 and 100 of 300 at 2 percent; the tie goes by name.
    assert [(c.name, c.count) for c in facets.categories] == [
        ("Zoology", 5200),
        ("Art", 5000),
        ("History", 5000),
    ]
    assert [(f.format, f.count) for f in facets.formats] == [
        (pb.BOOK_FORMAT_PAPERBACK, 10000),
        (pb.BOOK_FORMAT_EBOOK, 5000),
    ]
    assert [(lang.language_code, lang.count) for lang in facets.languages] == [
        ("en", 12000),
        ("de", 1500),
        ("fr", 1500),
    ]
    # Bands in band order, not by count; the last one is open.
    assert [(b.min_price.minor_units, b.count) for b in facets.price_bands] == [
        (0, 7500),
        (5000, 7500),
    ]
    assert not facets.price_bands[1].HasField("max_price")
    assert facets.price_bands[0].max_price.minor_units == 1000


def test_estimates_follow_the_total_and_keep_their_order() -> None:
    facets = scaled_to_total(_facets(sampled()), 12_000)  # the sample said 15,000
    assert sum(lang.count for lang in facets.languages) == 12_000
    assert [(lang.language_code, lang.count) for lang in facets.languages] == [
        ("en", 9600),
        ("de", 1200),
        ("fr", 1200),
    ]
    assert [(c.name, c.count) for c in facets.categories] == [
        ("Zoology", 4200),
        ("Art", 4000),
        ("History", 4000),
    ]


def test_exact_counts_are_left_as_they_are() -> None:
    exact = FacetCounts(languages={"en": 3, "de": 4}, formats={"ebook": 7}, matches=7)
    facets = _facets(exact)
    assert not facets.counts_are_estimates
    assert [(lang.language_code, lang.count) for lang in facets.languages] == [("de", 4), ("en", 3)]
    assert scaled_to_total(facets, 1_000) == facets
    assert scaled_to_total(pb.SearchFacets(counts_are_estimates=True), 1_000) == pb.SearchFacets(
        counts_are_estimates=True
    )


def test_a_tie_made_by_scaling_is_ordered_by_value() -> None:
    facets = pb.SearchFacets(counts_are_estimates=True)
    facets.formats.add(format=pb.BOOK_FORMAT_EBOOK, count=10_000)
    facets.formats.add(format=pb.BOOK_FORMAT_PAPERBACK, count=9_900)
    facets.languages.add(language_code="en", count=19_900)
    scaled = scaled_to_total(facets, 9_950)  # half: 5,000 and 4,950 -> 5,000
    assert [(f.format, f.count) for f in scaled.formats] == [
        (pb.BOOK_FORMAT_PAPERBACK, 5000),
        (pb.BOOK_FORMAT_EBOOK, 5000),
    ]


def test_a_price_range_is_an_index_key_only_when_it_is_whole_bands() -> None:
    def whole(low: str | None, high: str | None) -> bool:
        return price_in_whole_bands(
            SearchFilters(
                "x",
                None,
                None if low is None else Decimal(low),
                None if high is None else Decimal(high),
                None,
                None,
            )
        )

    # Bands <10, 10-20, 20-35, 35-50, 50+ (a price on an edge starts the next band).
    assert not whole(None, None)  # no price filter
    assert whole("10", None)
    assert whole(None, "9.99")
    assert whole("10", "19.99")
    assert whole("20", "49.99")
    assert not whole("10", "20")  # 20.00 is in the next band
    assert not whole("10", "25")
    assert not whole("9.99", None)
    assert not whole("0", "9.99")  # 0 is no edge: checked on the rows
    # The facets' bands are the index's.
    assert [low for low, _ in PRICE_BANDS[1:]] == list(PRICE_BAND_EDGES)


def test_price_band_keys_stand_beside_a_range_only_where_they_pay_and_never_in_estimates() -> None:
    in_part = SearchFilters("hit respect", None, Decimal(10), Decimal(25), None, None)
    whole = SearchFilters("hit respect", None, Decimal(10), Decimal("19.99"), None, None)
    many = QueryWords(searchable=True, planned=PRICE_BANDS_BESIDE_FROM)
    rare = QueryWords(searchable=True, planned=403)

    def statement(filters: SearchFilters, words: QueryWords) -> str:
        return small_search_sql(filters, words, "price_asc", 0, 21, 10_000)[0]

    assert "search_price_keys" in statement(in_part, many)
    # The range itself stays, where no index can serve it: the statement runs with a
    # generic plan, which must not pick the price index for a range it cannot see.
    assert "(b.price + 0) >= $" in statement(in_part, many)
    assert "(b.price + 0) >= $" in statement(in_part, rare)
    assert "search_price_keys" not in statement(in_part, rare)
    # Estimates never see a key beside its own condition (it would be counted twice).
    assert "search_price_keys" not in _fixed_where(in_part, True)
    # Whole bands: the keys alone, wherever.
    for text in (statement(whole, rare), _fixed_where(whole, True)):
        assert "search_price_keys" in text
        assert "b.price >=" not in text


def test_a_row_is_checked_by_its_cheapest_conditions_first() -> None:
    """Comparisons, then the words (the book's vector), then the index keys (built per
    row): the order a sampled row is checked in (PostgreSQL keeps it, costs being equal)."""
    filters = SearchFilters("know", (62,), Decimal(10), Decimal(25), None, None)
    words_of_know = QueryWords(searchable=True, lexeme="know", planned=230_000)
    statement = small_search_sql(filters, words_of_know, "price_asc", 0, 21, 10_000)[0]
    matched = statement.split("WHERE ", 1)[1].split(" LIMIT", 1)[0]  # the matches' clause
    for where in (_fixed_where(filters, True), matched):
        price = where.index("b.price")
        words = where.index("b.search_vector @@ q.query")
        keys = where.index("search_category_keys")
        assert price < words < keys, where
