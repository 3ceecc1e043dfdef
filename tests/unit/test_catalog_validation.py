"""The catalog's validators refuse what its store cannot hold, naming the field, also when
called outside gRPC (jobs, the seed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloudshelf.catalog.v1 import catalog_pb2
from cloudshelf.runtime.errors import DomainError, InvalidArgument, NotFound
from cloudshelf.runtime.validation import check_text
from services.catalog.validation import (
    MAX_ID,
    check_id,
    check_isbn13,
    check_language,
    check_length,
    check_lookup_id,
    check_slug,
    check_title,
    refuse_output_only_book_fields,
)


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x0e", "\x1f"])
def test_text_checks_refuse_control_characters(character: str) -> None:
    checks: list[Callable[[], object]] = [
        lambda: check_title("book.title", f"A{character}title"),
        lambda: check_length("author.bio", f"bio{character}", 100),
        lambda: check_text("request_id", character),
    ]
    for check in checks:
        with pytest.raises(InvalidArgument) as caught:
            check()
        assert caught.value.reason == "CONTROL_CHARACTER"
        assert f"U+{ord(character):04X}" in caught.value.problem


def test_text_checks_keep_tab_newline_and_carriage_return() -> None:
    assert check_length("book.description", " a\tb\r\nc ", 100) == "a\tb\r\nc"
    assert check_text("x", "\t\n\r") == "\t\n\r"
    with pytest.raises(InvalidArgument, match="at most 3 characters"):
        check_text("x", "abcd", max_length=3)


@pytest.mark.parametrize("slug", ["good-slug\n", "a\x00", "UPPER", "two--hyphens", "-edge", ""])
def test_slugs_must_match_whole(slug: str) -> None:
    with pytest.raises(InvalidArgument, match="slug"):
        check_slug("slug", slug)


@pytest.mark.parametrize("language", ["en-US-extra", "abc-12345678", "e", "en_US"])
def test_language_codes_must_match_whole_and_fit_the_column(language: str) -> None:
    with pytest.raises(InvalidArgument, match="language_code"):
        check_language("language_code", language)
    assert check_language("language_code", "pt-BR") == "pt-BR"


def test_isbn_digits_are_ascii() -> None:
    arabic_indic = "٩٧٨٠٣٠٦٤٠٦١٥٧"  # 9780306406157 in Arabic-Indic digits
    with pytest.raises(InvalidArgument, match="13 digits"):
        check_isbn13("isbn_13", arabic_indic)


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (0, InvalidArgument, "positive"),
        (-1, InvalidArgument, "positive"),
        (MAX_ID + 1, InvalidArgument, "at most 2147483647"),
        (2**63 - 1, InvalidArgument, "at most 2147483647"),
    ],
)
def test_referenced_ids_must_fit_the_store(
    value: int, error: type[DomainError], words: str
) -> None:
    with pytest.raises(error, match=words):
        check_id("book.category_id", value)
    assert check_id("book.category_id", MAX_ID) == MAX_ID


def test_looked_up_ids_beyond_the_store_are_not_found() -> None:
    with pytest.raises(NotFound, match="no book with id 2147483648"):
        check_lookup_id("id", MAX_ID + 1, "book")
    with pytest.raises(InvalidArgument, match="id: must be a positive id"):
        check_lookup_id("id", 0, "book")
    assert check_lookup_id("id", 7, "book") == 7


def test_create_book_accepts_a_book_without_output_fields() -> None:
    refuse_output_only_book_fields(
        catalog_pb2.Book(title="t", authors=[catalog_pb2.BookAuthor(author_id=1)])
    )
