"""SearchBooks' typo tolerance: a misspelled word is searched as the catalog spells it, and
the response says so (`corrected_query`); a correct query is never corrected."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import asyncpg
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from services.catalog.demo import seed_catalog
from services.catalog.spelling import STOP_WORDS
from tests.conftest import run_cli
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub


def swapped(text: str, at: int = 3) -> str:
    """The word with two neighbouring, different letters swapped (from `at` on): one
    edit, a typical typo."""
    while text[at] == text[at + 1]:
        at += 1
    return text[:at] + text[at + 1] + text[at] + text[at + 2 :]


async def new_book(catalog: CatalogServiceAsyncStub, title: str, **fields: object) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(title, **fields)))).book


async def search(
    catalog: CatalogServiceAsyncStub, query: str, *, exact: bool = False
) -> pb.SearchBooksResponse:
    response: pb.SearchBooksResponse = await catalog.SearchBooks(
        pb.SearchBooksRequest(query=query, exact_query=exact)
    )
    return response


def ids(response: pb.SearchBooksResponse) -> set[int]:
    return {b.id for b in response.books}


async def test_a_misspelled_word_is_searched_as_the_catalog_spells_it(
    catalog: CatalogServiceAsyncStub,
) -> None:
    topic = word()
    found = await new_book(catalog, f"The {topic} chronicles")

    response = await search(catalog, swapped(topic))
    assert response.corrected_query == topic
    assert ids(response) == {found.id}
    assert response.total_count == 1
    # A letter missing, one too many: one edit each.
    assert (await search(catalog, topic[:4] + topic[5:])).corrected_query == topic
    assert (await search(catalog, topic[:4] + "a" + topic[4:])).corrected_query == topic
    # Two edits in a long word, close enough together to leave most of its trigrams.
    assert (await search(catalog, topic[:4] + "ae" + topic[6:])).corrected_query == topic


async def test_only_the_wrong_word_changes_and_keeps_the_typed_case(
    catalog: CatalogServiceAsyncStub,
) -> None:
    history, war = word(), word()
    found = await new_book(catalog, f"A {history} of {war}")
    await new_book(catalog, f"A {history} of peace")

    # "histroy of war" -> "history of war": the stop word and the right word untouched.
    response = await search(catalog, f"{swapped(history)} of {war}")
    assert response.corrected_query == f"{history} of {war}"
    assert ids(response) == {found.id}
    response = await search(catalog, f"{history.capitalize()}  of {swapped(war).upper()}!")
    assert response.corrected_query == f"{history.capitalize()}  of {war.upper()}!"
    assert ids(response) == {found.id}
    # Several wrong words, each corrected; a misspelled stop word too.
    response = await search(catalog, f"{swapped(history)} abotu {swapped(war, 5)}")
    assert response.corrected_query == f"{history} about {war}"
    assert ids(response) == {found.id}
    # Not when a stop word would be all that is left to search.
    assert (await search(catalog, "abotu")).corrected_query == ""


async def test_the_other_words_choose_among_close_spellings(
    catalog: CatalogServiceAsyncStub,
) -> None:
    """ "deer noices" -> "deer notices" when no book has deer and voices, though voices
    are commoner: the next spelling is tried against the books."""
    stem, other = word(), word()
    common, rare, typo = (stem[:5] + letter + stem[6:] for letter in "aeo")
    for i in range(3):
        await new_book(catalog, f"{common} part {i}")
    found = await new_book(catalog, f"{other} {rare}")

    assert (await search(catalog, typo)).corrected_query == common
    response = await search(catalog, f"{other} {typo}")
    assert response.corrected_query == f"{other} {rare}"
    assert ids(response) == {found.id}


async def test_a_correct_query_is_never_corrected(catalog: CatalogServiceAsyncStub) -> None:
    common, elsewhere = word(), word()
    for i in range(4):
        await new_book(catalog, f"{common} volume {i}")
    # One edit from a word of four books, and in one book itself: rare but real.
    rare = swapped(common)
    rare_book = await new_book(catalog, f"{rare} tales")
    await new_book(catalog, f"{elsewhere} stories")

    response = await search(catalog, rare)
    assert response.corrected_query == ""
    assert ids(response) == {rare_book.id}
    response = await search(catalog, f"{common} volume")
    assert response.corrected_query == ""
    assert len(response.books) == 4
    # Known words that never meet in one book: nothing found, and nothing to correct.
    response = await search(catalog, f"{common} {elsewhere}")
    assert response.corrected_query == ""
    assert list(response.books) == []
    # A word nothing is close to, and stop words only: searched as typed.
    assert (await search(catalog, word())).corrected_query == ""
    assert (await search(catalog, "the of and")).corrected_query == ""


async def test_exact_query_searches_the_words_as_typed(catalog: CatalogServiceAsyncStub) -> None:
    topic = word()
    found = await new_book(catalog, f"{topic} atlas")
    typo = swapped(topic)

    # The corrected page is cached under the text as typed; the exact one is another page.
    assert ids(await search(catalog, typo)) == {found.id}
    exact = await search(catalog, typo, exact=True)
    assert exact.corrected_query == ""
    assert list(exact.books) == []
    assert exact.total_count == 0  # not the corrected query's total, cached before it
    corrected = await search(catalog, typo)
    assert (corrected.corrected_query, corrected.total_count) == (topic, 1)

    # The other way round: the exact search first, then the corrected one (and cached).
    other = word()
    other_book = await new_book(catalog, f"{other} atlas")
    assert (await search(catalog, swapped(other), exact=True)).total_count == 0
    for _ in range(2):
        corrected = await search(catalog, swapped(other))
        assert corrected.corrected_query == other
        assert (ids(corrected), corrected.total_count) == ({other_book.id}, 1)


async def test_phrases_and_exclusions_keep_their_syntax(catalog: CatalogServiceAsyncStub) -> None:
    lord, rings, towers = word(), word(), word()
    fellowship = await new_book(catalog, f"{lord} of the {rings}")
    other = await new_book(catalog, f"{lord} of two {towers}")

    response = await search(catalog, f'"{swapped(lord)} of the {rings}"')
    assert response.corrected_query == f'"{lord} of the {rings}"'
    assert ids(response) == {fellowship.id}
    response = await search(catalog, f"{swapped(lord)} -{towers}")
    assert response.corrected_query == f"{lord} -{towers}"
    assert ids(response) == {fellowship.id}
    response = await search(catalog, f"{swapped(lord)} OR {swapped(towers)}")
    assert response.corrected_query == f"{lord} OR {towers}"
    assert ids(response) == {fellowship.id, other.id}
    # Beside OR, a typo is corrected however many books the other word matches.
    for i in range(6):
        await new_book(catalog, f"{rings} volume {i}")
    response = await search(catalog, f"{rings} OR {swapped(towers)}")
    assert response.corrected_query == f"{rings} OR {towers}"
    assert other.id in ids(response)
    assert response.total_count == 8
    # An excluded word is never corrected (it excludes nothing either way).
    response = await search(catalog, f"{lord} -{swapped(towers)}")
    assert response.corrected_query == ""
    assert ids(response) == {fellowship.id, other.id}


async def test_a_new_word_is_correctable_at_once_and_a_removed_one_no_more(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    topic, replacement = word(), word()
    typo = swapped(topic)
    assert (await search(catalog, typo)).corrected_query == ""

    created = await new_book(catalog, f"{topic} handbook")
    response = await search(catalog, typo)
    assert response.corrected_query == topic
    assert ids(response) == {created.id}

    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=created.id, title=f"{replacement} handbook"),
            update_mask=FieldMask(paths=["title"]),
        )
    )
    response = await search(catalog, typo)
    assert response.corrected_query == ""
    assert list(response.books) == []
    assert (await search(catalog, swapped(replacement))).corrected_query == replacement

    # After the lexicon's fold (the fold-spelling job), the same answers.
    job = await run_cli(stack, "job", "fold-spelling")
    assert job.returncode == 0, job.stderr
    assert (await search(catalog, typo)).corrected_query == ""
    assert (await search(catalog, swapped(replacement))).corrected_query == replacement


async def test_author_names_are_correctable(catalog: CatalogServiceAsyncStub) -> None:
    surname = word().capitalize()
    author = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Jo", last_name=surname))
        )
    ).author
    found = await new_book(
        catalog, f"Untitled {word()}", authors=[pb.BookAuthor(author_id=author.id)]
    )
    response = await search(catalog, swapped(surname))
    assert response.corrected_query == surname  # the typed capital kept
    assert ids(response) == {found.id}


async def test_unicode_words(catalog: CatalogServiceAsyncStub) -> None:
    stem = word()
    accented = f"café{stem}"
    cafe = await new_book(catalog, f"{accented} society")
    # Case is folded beyond ASCII: "Über" is in the lexicon as "über", one substitution
    # away from "uber".
    capital = f"Über{stem}"
    uber = await new_book(catalog, f"{capital} alles")
    cyrillic = "".join(secrets.choice("бвгджзклмнпрстфхцчшщ") for _ in range(8))
    book_ru = await new_book(catalog, f"{cyrillic} книга")

    response = await search(catalog, f"cafe{stem}")
    assert response.corrected_query == accented
    assert ids(response) == {cafe.id}
    response = await search(catalog, f"uber{stem}")
    assert response.corrected_query == capital.lower()
    assert ids(response) == {uber.id}
    response = await search(catalog, swapped(cyrillic))
    assert response.corrected_query == cyrillic
    assert ids(response) == {book_ru.id}


async def test_the_lexicon_equals_a_rebuild_from_the_books(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    """The triggers' counts (folded and pending), after every write the tests made: the
    books per lexeme that ts_stat counts from the vectors themselves."""
    keep, gone = word(), word()
    kept = await new_book(catalog, f"{keep} title")
    dropped = await new_book(catalog, f"{gone} only")
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=dropped.id, status=pb.BOOK_STATUS_DISCONTINUED),
            update_mask=FieldMask(paths=["status"]),
        )
    )
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=kept.id, description=f"{keep} again, and {word()}"),
            update_mask=FieldMask(paths=["description"]),
        )
    )
    counted = """
        SELECT lexeme, sum(n)::int AS books FROM (
            SELECT lexeme, books AS n FROM book_catalog.spelling_lexemes
            UNION ALL SELECT lexeme, delta FROM book_catalog.spelling_lexeme_changes) c
         GROUP BY lexeme HAVING sum(n) <> 0"""
    rebuilt = """
        SELECT word AS lexeme, ndoc AS books FROM ts_stat(
            'SELECT search_vector FROM book_catalog.books WHERE status = ''active''')"""
    conn = await asyncpg.connect(stack.postgres.dsn("catalog"))
    try:
        # The stop words the corrections know are the search configuration's own.
        indexed = "SELECT w FROM unnest($1::text[]) w WHERE to_tsvector('english', w) <> ''"
        assert await conn.fetch(indexed, sorted(STOP_WORDS)) == []
        for when in ("pending", "folded"):
            assert await conn.fetch(f"({counted}) EXCEPT ({rebuilt})") == [], when
            assert await conn.fetch(f"({rebuilt}) EXCEPT ({counted})") == [], when
            job = await run_cli(stack, "job", "fold-spelling")
            assert job.returncode == 0, job.stderr
        assert await conn.fetchval("SELECT count(*) FROM book_catalog.spelling_lexeme_changes") == 0
        # A word no active book holds is pruned from the corrections' vocabulary.
        vocabulary = "SELECT count(*) FROM book_catalog.spelling_words WHERE word = $1"
        assert await conn.fetchval(vocabulary, gone) == 0
        assert await conn.fetchval(vocabulary, keep) == 1
    finally:
        await conn.close()


async def test_words_typed_together_prefer_a_spelling_that_stands_together_in_a_book(
    catalog: CatalogServiceAsyncStub,
) -> None:
    """'Cahl Kilroy' is the author 'Cahal Kilroy', not 'Call Kilroy' because some book has
    'call' and 'Kilroy' apart: among spellings as close, one whose words are side by side
    in a book, as typed, goes first, however rare."""
    surname = word()
    name = word()
    typo = name[:3] + name[4:]  # a letter missing
    common = typo[:-1] + ("a" if typo[-1] != "a" else "b")  # one substitution from the typo
    author = await new_book(catalog, f"The {word()} years", description=f"By {name} {surname}.")
    for _ in range(3):  # the common spelling is in more books, one of them beside the surname
        await new_book(catalog, f"{common} {word()}", description=f"Of {surname} and others.")

    response = await search(catalog, f"{typo.capitalize()} {surname.capitalize()}")
    assert response.corrected_query == f"{name.capitalize()} {surname.capitalize()}"
    assert ids(response) == {author.id}
    # Apart, or with web-search syntax, the words are not read as a phrase: the most
    # frequent close spelling that meets the other word in a book, as before.
    assert (await search(catalog, f'{typo} "{surname}"')).corrected_query == f'{common} "{surname}"'


async def test_a_seeded_catalog_has_its_lexicon(catalog_dsn: str) -> None:
    """The demo loader writes with the books' triggers off: it fills the lexicon itself,
    so `make up`'s catalog corrects typos too (its counts are ts_stat's, its words those
    of the titles, descriptions and author names)."""
    await seed_catalog(catalog_dsn, 300, seed=5, progress=False)
    conn = await asyncpg.connect(catalog_dsn)
    try:
        rebuilt = """
            SELECT word AS lexeme, ndoc AS books FROM ts_stat(
                'SELECT search_vector FROM book_catalog.books WHERE status = ''active''')"""
        counted = "SELECT lexeme, books FROM book_catalog.spelling_lexemes"
        assert await conn.fetch(f"({counted}) EXCEPT ({rebuilt})") == []
        assert await conn.fetch(f"({rebuilt}) EXCEPT ({counted})") == []
        assert await conn.fetchval("SELECT count(*) FROM book_catalog.spelling_lexeme_changes") == 0
        title, author = await conn.fetchrow(
            "SELECT b.title, a.last_name FROM book_catalog.books b"
            " JOIN book_catalog.book_authors ba ON ba.book_id = b.id"
            " JOIN book_catalog.authors a ON a.id = ba.author_id"
            " WHERE b.status = 'active' ORDER BY b.id LIMIT 1"
        )
        shown = "SELECT count(*) FROM book_catalog.spelling_words WHERE word = lower($1)"
        longest = max(title.split(), key=len).strip(".,:;!?'\"")
        assert await conn.fetchval(shown, longest) == 1, longest
        assert await conn.fetchval(shown, author) == 1, author
    finally:
        await conn.close()
