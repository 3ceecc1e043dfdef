"""ISBN check digits (the catalog's validation) against published ISBNs, and the demo
generator's fast ISBN sequence against them."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import pytest

from services.catalog.demo.generate import isbn_pair, isbn_pairs
from services.catalog.validation import (
    isbn10_check_digit,
    isbn10_problem,
    isbn13_check_digit,
    isbn13_problem,
)


@pytest.mark.parametrize(
    "isbn",
    ["978-0-306-40615-7", "978-0-13-468599-1", "978-1-4028-9462-6", "979-10-90636-07-1"],
)
def test_isbn13_check_digit_of_known_isbns(isbn: str) -> None:
    digits = isbn.replace("-", "")
    assert isbn13_check_digit(digits[:12]) == digits[12]


@pytest.mark.parametrize(
    "isbn", ["0-306-40615-2", "0-8044-2957-X", "0-13-468599-7", "1-4028-9462-7"]
)
def test_isbn10_check_digit_of_known_isbns(isbn: str) -> None:
    digits = isbn.replace("-", "")
    assert isbn10_check_digit(digits[:9]) == digits[9]


def test_isbn_pair_gives_both_forms_of_one_body() -> None:
    assert isbn_pair(30640615) == ("9780306406157", "0306406152")
    assert isbn_pair(804429570 // 10) == ("9780804429573", "080442957X")


@pytest.mark.parametrize("first", [100_000_000, 100_009_990, 30_640_610, 199_998_500])
def test_isbn_pairs_counts_up_like_isbn_pair(first: int) -> None:
    # Crosses a boundary of the 10,000-entry tables.
    expected = [isbn_pair(first + i) for i in range(2_000)]
    assert list(islice(isbn_pairs(first), 2_000)) == expected


def test_isbn_pairs_agree_with_the_catalogs_validation_over_a_whole_table() -> None:
    # Every low 4-digit combination once, each ISBN-10 check value (X included) many times.
    pairs = list(islice(isbn_pairs(123_450_000), 10_000))
    assert {isbn10[-1] for _, isbn10 in pairs} == set("0123456789X")
    for isbn13, isbn10 in pairs:
        assert isbn13_problem(isbn13) is None and isbn10_problem(isbn10) is None


@pytest.mark.parametrize(
    ("isbn", "problem"),
    [
        ("\u0669\u0667\u0668" + "0" * 10, isbn13_problem),  # Arabic-Indic 978...
        ("\uff19" * 13, isbn13_problem),  # full-width digits
        ("\u0660" * 10, isbn10_problem),
    ],
)
def test_only_ascii_digits_make_an_isbn(isbn: str, problem: Callable[[str], str | None]) -> None:
    # str.isdigit() and the regex \d accept these; int() reads them as numbers.
    assert problem(isbn) is not None
