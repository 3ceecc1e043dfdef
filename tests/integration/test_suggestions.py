"""SuggestBooks: title, author and category completions of a prefix, most popular first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.devstack.stack import Stack
from tests.conftest import run_cli
from tests.error_details import details_of_error
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

TITLE, AUTHOR, CATEGORY = (
    pb.SUGGESTION_KIND_TITLE,
    pb.SUGGESTION_KIND_AUTHOR,
    pb.SUGGESTION_KIND_CATEGORY,
)


async def suggest(
    catalog: CatalogServiceAsyncStub, prefix: str, *kinds: int, limit: int = 0
) -> list[tuple[int, str, int]]:
    response = await catalog.SuggestBooks(
        pb.SuggestBooksRequest(prefix=prefix, kinds=list(kinds), limit=limit)  # type: ignore[arg-type]
    )
    return [(s.kind, s.text, s.ref_id) for s in response.suggestions]


async def new_book(catalog: CatalogServiceAsyncStub, title: str, **fields: object) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(title, **fields)))).book


async def sell(catalog: CatalogServiceAsyncStub, book_id: int, copies: int) -> None:
    stock = pb.InventoryAdjustment(book_id=book_id, delta=copies)
    sale = pb.InventoryAdjustment(book_id=book_id, delta=-copies, is_purchase=True)
    await catalog.AdjustInventory(pb.AdjustInventoryRequest(adjustments=[stock]))
    await catalog.AdjustInventory(pb.AdjustInventoryRequest(adjustments=[sale]))


async def test_ranked_by_popularity_after_the_refresh_ties_by_id(
    catalog: CatalogServiceAsyncStub, stack: Stack
) -> None:
    topic = word()
    quiet = await new_book(catalog, f"{topic} quiet")
    best = await new_book(catalog, f"{topic} best")
    second = await new_book(catalog, f"{topic} second")
    also_quiet = await new_book(catalog, f"{topic} also quiet")
    await sell(catalog, best.id, 7)
    await sell(catalog, second.id, 2)
    job = await run_cli(stack, "job", "refresh-popular")
    assert job.returncode == 0, job.stderr

    found = await suggest(catalog, topic[:6], TITLE)
    assert [ref for _, _, ref in found] == [best.id, second.id, quiet.id, also_quiet.id]
    response = await catalog.SuggestBooks(pb.SuggestBooksRequest(prefix=topic, limit=2))
    assert [s.ref_id for s in response.suggestions] == [best.id, second.id]
    assert response.suggestions[0].popularity == 70  # 10 x purchases (+ views)


async def test_earlier_words_whole_the_last_a_prefix(catalog: CatalogServiceAsyncStub) -> None:
    topic = word()
    peace = await new_book(catalog, f"{topic} and Peace")
    pets = await new_book(catalog, f"{topic} and Pets: a Memoir")
    await new_book(catalog, f"{topic} anders Peace")
    await new_book(catalog, f"{topic} and War")

    expected = {(TITLE, peace.title, peace.id), (TITLE, pets.title, pets.id)}
    assert set(await suggest(catalog, f"{topic} and pe")) == expected
    # Case and runs of spaces do not matter; punctuation in titles reads as a space.
    assert set(await suggest(catalog, f"  {topic.upper()}   AND  Pe ")) == expected
    assert await suggest(catalog, f"{topic} and pets") == [(TITLE, pets.title, pets.id)]
    assert await suggest(catalog, f"{topic} and zz") == []


async def test_unicode_case_accents_and_cjk(catalog: CatalogServiceAsyncStub) -> None:
    topic = word()
    uber = await new_book(catalog, f"Über {topic} die Brücke")
    creme = await new_book(catalog, f"Crème Brûlée {topic}")
    tokyo = await new_book(catalog, f"{topic} 東京物語")

    assert await suggest(catalog, f"über {topic[:4]}") == [(TITLE, uber.title, uber.id)]
    assert await suggest(catalog, f"ÜBER {topic} DIE") == [(TITLE, uber.title, uber.id)]
    assert await suggest(catalog, f"creme brulee {topic[:3]}") == [(TITLE, creme.title, creme.id)]
    assert await suggest(catalog, f"CRÈME BRÛLÉE {topic}") == [(TITLE, creme.title, creme.id)]
    assert await suggest(catalog, f"{topic} 東京") == [(TITLE, tokyo.title, tokyo.id)]
    assert await suggest(catalog, f"{topic} 大阪") == []


async def test_kinds_authors_by_either_name_and_categories(
    catalog: CatalogServiceAsyncStub,
) -> None:
    topic = word()
    author = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name=topic.title(), last_name="Łukasz"))
        )
    ).author
    surname = word()
    other = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Leo", last_name=surname))
        )
    ).author
    category = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"{topic.title()} Studies"))
        )
    ).category
    title = await new_book(
        catalog,
        f"{topic} tales",
        authors=[pb.BookAuthor(author_id=author.id, role=pb.AUTHOR_ROLE_AUTHOR, order_index=1)],
    )

    every = set(await suggest(catalog, topic))
    assert every == {
        (TITLE, title.title, title.id),
        (AUTHOR, f"{topic.title()} Łukasz", author.id),
        (CATEGORY, category.name, category.id),
    }
    assert await suggest(catalog, topic, AUTHOR) == [(AUTHOR, f"{topic.title()} Łukasz", author.id)]
    assert await suggest(catalog, topic, CATEGORY) == [(CATEGORY, category.name, category.id)]
    assert set(await suggest(catalog, topic, TITLE, CATEGORY)) == every - {
        (AUTHOR, f"{topic.title()} Łukasz", author.id)
    }
    # The surname first, or the whole name in either order; an author appears once.
    assert await suggest(catalog, surname[:5]) == [(AUTHOR, f"Leo {surname}", other.id)]
    assert await suggest(catalog, f"leo {surname[:3]}") == [(AUTHOR, f"Leo {surname}", other.id)]
    assert await suggest(catalog, f"{surname} le") == [(AUTHOR, f"Leo {surname}", other.id)]
    assert await suggest(catalog, f"{topic} lukasz", AUTHOR) == [
        (AUTHOR, f"{topic.title()} Łukasz", author.id)
    ]


async def test_new_renamed_and_inactive_books_stay_current(
    catalog: CatalogServiceAsyncStub,
) -> None:
    before, after = word(), word()
    created = await new_book(catalog, f"{before} story")
    assert await suggest(catalog, before) == [(TITLE, created.title, created.id)]

    renamed = pb.Book(id=created.id, title=f"{after} story")
    await catalog.UpdateBook(
        pb.UpdateBookRequest(book=renamed, update_mask=FieldMask(paths=["title"]))
    )
    assert await suggest(catalog, before) == []
    assert await suggest(catalog, after) == [(TITLE, renamed.title, created.id)]

    for status in (pb.BOOK_STATUS_INACTIVE, pb.BOOK_STATUS_DISCONTINUED):
        hidden = pb.Book(id=created.id, status=status)
        await catalog.UpdateBook(
            pb.UpdateBookRequest(book=hidden, update_mask=FieldMask(paths=["status"]))
        )
        assert await suggest(catalog, after) == []
    active = pb.Book(id=created.id, status=pb.BOOK_STATUS_ACTIVE)
    await catalog.UpdateBook(
        pb.UpdateBookRequest(book=active, update_mask=FieldMask(paths=["status"]))
    )
    assert await suggest(catalog, after) == [(TITLE, renamed.title, created.id)]
    discontinued = await new_book(catalog, f"{word()} gone", status=pb.BOOK_STATUS_DISCONTINUED)
    assert await suggest(catalog, discontinued.title.split()[0]) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "   "}, "prefix"),
        ({"prefix": "?!"}, "prefix"),
        ({"prefix": "one two three four"}, "prefix"),
        ({"prefix": "x" * 101}, "prefix"),
        ({"prefix": "war\x00"}, "prefix"),
        ({"prefix": "war", "limit": 21}, "limit"),
        ({"prefix": "war", "limit": -1}, "limit"),
        ({"prefix": "war", "kinds": [0]}, "kinds[0]"),
        ({"prefix": "war", "kinds": [1, 99]}, "kinds[1]"),
        ({"prefix": "war", "kinds": [1, 2, 3, 1]}, "kinds"),
    ],
)
async def test_invalid_requests_name_the_field(
    catalog: CatalogServiceAsyncStub, request_fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.SuggestBooks(pb.SuggestBooksRequest(**request_fields))  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of_error(caught.value).fields == [field]


async def test_limit_default_and_cap(catalog: CatalogServiceAsyncStub) -> None:
    topic = word()
    for n in range(22):
        await new_book(catalog, f"{topic} volume {n}")
    assert len(await suggest(catalog, topic)) == 10
    assert len(await suggest(catalog, topic, limit=20)) == 20
