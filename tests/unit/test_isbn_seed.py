"""The seed's ISBN check digits, against published ISBNs."""

from __future__ import annotations

from itertools import islice

import pytest

from services.catalog.seed import isbn10_check_digit, isbn13_check_digit, isbn_pair, isbn_pairs


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


@pytest.mark.parametrize("body", ["12345678901", "1234567890123", "97803064061a"])
def test_isbn13_check_digit_rejects_malformed_input(body: str) -> None:
    with pytest.raises(ValueError):
        isbn13_check_digit(body)


@pytest.mark.parametrize("body", ["12345678", "1234567890", "03064061x"])
def test_isbn10_check_digit_rejects_malformed_input(body: str) -> None:
    with pytest.raises(ValueError):
        isbn10_check_digit(body)
