"""SearchBooks: web-search syntax, filters, every sort, paging, and author names in the
search vector (linked, unlinked, renamed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.common.v1 import common_pb2
from tests.conftest import expect_error
from tests.factories import book, usd, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNKNOWN_ENUM: Any = 99  # a value no enum defines, as an old or buggy client may send


async def create(catalog: CatalogServiceAsyncStub, **fields: Any) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(**fields)))).book


async def search_ids(catalog: CatalogServiceAsyncStub, query: str, **options: Any) -> list[int]:
    response = await catalog.SearchBooks(
        pb.SearchBooksRequest(query=query, page_size=50, **options)
    )
    return [b.id for b in response.books]


async def test_web_search_syntax(catalog: CatalogServiceAsyncStub) -> None:
    tag, other = word(), word()
    river = await create(catalog, title=f"The silent river {tag}")
    glass = await create(catalog, title=f"A history of glass {tag}")
    both = await create(catalog, title=f"River glass {tag}", description=f"about {other}")
    assert set(await search_ids(catalog, f"{tag} river")) == {river.id, both.id}
    assert await search_ids(catalog, f'{tag} "silent river"') == [river.id]
    assert set(await search_ids(catalog, f"{tag} silent OR history")) == {river.id, glass.id}
    assert set(await search_ids(catalog, f"{tag} -glass")) == {river.id}
    assert await search_ids(catalog, other) == [both.id]  # description words count
    # Stop words only: no text filter, not an error.
    response = await catalog.SearchBooks(pb.SearchBooksRequest(query="the", page_size=1))
    assert response.total_count > 0


async def test_words_match_whatever_their_case_accented_letters_too(
    catalog: CatalogServiceAsyncStub,
) -> None:
    """Case is folded beyond ASCII (the database's LC_CTYPE decides: C would index
    'Émile' as it is written, and 'émile' would find nothing)."""
    tag = word()
    emile = await create(catalog, title=f"Émile {tag}")
    school = await create(catalog, title=f"L'ÉCOLE DES FEMMES {tag}")
    assert await search_ids(catalog, f"émile {tag}") == [emile.id]
    assert await search_ids(catalog, f"ÉMILE {tag}") == [emile.id]
    assert await search_ids(catalog, f"école {tag}") == [school.id]


async def test_only_active_books_are_found(catalog: CatalogServiceAsyncStub) -> None:
    tag = word()
    shown = await create(catalog, title=f"Shown {tag}")
    await create(catalog, title=f"Hidden {tag}", status=pb.BOOK_STATUS_DISCONTINUED)
    assert await search_ids(catalog, tag) == [shown.id]


async def test_every_sort_order(catalog: CatalogServiceAsyncStub) -> None:
    tag = word()
    cheap = await create(
        catalog,
        title=f"{tag} {tag} {tag}",
        price=usd(500),
        publication_date=common_pb2.Date(year=1990, month=1, day=1),
    )
    mid = await create(
        catalog,
        title=f"Middle {tag}",
        price=usd(1500),
        publication_date=common_pb2.Date(year=2024, month=5, day=1),
    )
    dear = await create(
        catalog,
        title="Dear",
        description=f"mentions {tag} once",
        price=usd(4000),
        publication_date=common_pb2.Date(year=2010, month=1, day=1),
    )
    await catalog.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=mid.id, rating=5)))
    await catalog.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=dear.id, rating=3)))

    def ids(*books: pb.Book) -> list[int]:
        return [b.id for b in books]

    assert await search_ids(catalog, tag, sort=pb.SEARCH_SORT_PRICE_ASC) == ids(cheap, mid, dear)
    assert await search_ids(catalog, tag, sort=pb.SEARCH_SORT_PRICE_DESC) == ids(dear, mid, cheap)
    assert await search_ids(catalog, tag, sort=pb.SEARCH_SORT_RATING) == ids(mid, dear, cheap)
    assert await search_ids(catalog, tag, sort=pb.SEARCH_SORT_NEWEST) == ids(mid, dear, cheap)
    # Title (weight A), three times, beats a single description mention (weight C).
    relevance = await search_ids(catalog, tag, sort=pb.SEARCH_SORT_RELEVANCE)
    assert relevance[0] == cheap.id and relevance[-1] == dear.id
    assert await search_ids(catalog, tag) == relevance  # unspecified means relevance


async def test_filters_price_format_language_and_category_subtree(
    catalog: CatalogServiceAsyncStub,
) -> None:
    tag = word()
    parent = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"P {tag}"))
        )
    ).category
    child = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(
                category=pb.Category(name=f"C {tag}", parent_category_id=parent.id)
            )
        )
    ).category
    in_child = await create(
        catalog,
        title=f"In child {tag}",
        category_id=child.id,
        price=usd(1000),
        format=pb.BOOK_FORMAT_EBOOK,
        language_code="fr",
    )
    in_parent = await create(
        catalog, title=f"In parent {tag}", category_id=parent.id, price=usd(3000)
    )
    elsewhere = await create(catalog, title=f"Elsewhere {tag}", price=usd(2000))
    assert set(await search_ids(catalog, tag, category_id=parent.id)) == {in_child.id, in_parent.id}
    assert await search_ids(catalog, tag, category_id=child.id) == [in_child.id]
    assert set(await search_ids(catalog, tag, min_price=usd(1500))) == {in_parent.id, elsewhere.id}
    assert await search_ids(catalog, tag, max_price=usd(1000)) == [in_child.id]
    assert await search_ids(catalog, tag, format=pb.BOOK_FORMAT_EBOOK) == [in_child.id]
    assert await search_ids(catalog, tag, language_code="fr") == [in_child.id]


async def test_price_ranges_across_the_index_price_bands(
    catalog: CatalogServiceAsyncStub,
) -> None:
    # The index narrows a price filter by band (<10, 10-20, 20-35, 35-50, 50+) and the
    # range itself is checked on the book: a range's ends on, beside and inside bands.
    tag = word()
    shelf = (
        await catalog.CreateCategory(pb.CreateCategoryRequest(category=pb.Category(name=tag)))
    ).category
    cents = [999, 1000, 1001, 1999, 2000, 3499, 3500, 4999, 5000, 8999]
    # Whole bands (10.00-19.99, 20.00-49.99, ...) are index keys; other ends are checked
    # on the rows.
    books = {
        c: (await create(catalog, title=f"Priced {tag}", price=usd(c), category_id=shelf.id)).id
        for c in cents
    }
    for low in (None, 0, 999, 1000, 2000, 3501, 5000):
        for high in (None, 999, 1000, 1999, 2000, 4999, 5000, 8999):
            if low is not None and high is not None and low > high:
                continue
            bounds: dict[str, Any] = {}
            if low is not None:
                bounds["min_price"] = usd(low)
            if high is not None:
                bounds["max_price"] = usd(high)
            expected = {
                books[c] for c in cents if (low is None or c >= low) and (high is None or c <= high)
            }
            assert set(await search_ids(catalog, tag, **bounds)) == expected, (low, high)
            # Browsing (no words): the filters alone drive the index.
            browsed = await search_ids(catalog, "", category_id=shelf.id, **bounds)
            assert set(browsed) == expected, (low, high)


async def test_paging_and_total_count(catalog: CatalogServiceAsyncStub) -> None:
    tag = word()
    created = {
        (await create(catalog, title=f"Volume {i} {tag}", price=usd(100 * (i + 1)))).id
        for i in range(7)
    }
    seen: list[int] = []
    token = ""
    while True:
        page = await catalog.SearchBooks(
            pb.SearchBooksRequest(
                query=tag, sort=pb.SEARCH_SORT_PRICE_ASC, page_size=3, page_token=token
            )
        )
        assert (page.total_count, page.total_count_is_estimate) == (7, False)
        seen += [b.id for b in page.books]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 7 and set(seen) == created
    await expect_error(
        catalog.SearchBooks(
            pb.SearchBooksRequest(
                query="other", page_size=3, page_token=page.next_page_token or "x"
            )
        ),
        INVALID,
        "page_token",
    )


async def test_search_validation(catalog: CatalogServiceAsyncStub) -> None:
    for request, field in (
        (pb.SearchBooksRequest(query="x", sort=UNKNOWN_ENUM), "sort"),
        (pb.SearchBooksRequest(query="x", min_price=usd(500), max_price=usd(100)), "max_price"),
        (pb.SearchBooksRequest(query="x", min_price=usd(-5)), "min_price"),
        (pb.SearchBooksRequest(query="x", format=UNKNOWN_ENUM), "format"),
        (pb.SearchBooksRequest(query="x", page_size=-1), "page_size"),
        (pb.SearchBooksRequest(query="x" * 501), "query"),
    ):
        await expect_error(catalog.SearchBooks(request), INVALID, field)


async def test_author_names_follow_links_and_renames(catalog: CatalogServiceAsyncStub) -> None:
    last, renamed, tag = word(), word(), word()
    author = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Jo", last_name=last))
        )
    ).author
    # Linked at creation: found by the author's name (the seed's trigger never saw it).
    linked = await create(
        catalog, title=f"Linked {tag}", authors=[pb.BookAuthor(author_id=author.id)]
    )
    assert await search_ids(catalog, last) == [linked.id]

    # Linked later by an update.
    later = await create(catalog, title=f"Later {tag}")
    assert await search_ids(catalog, last) == [linked.id]
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=later.id, authors=[pb.BookAuthor(author_id=author.id)]),
            update_mask=FieldMask(paths=["authors"]),
        )
    )
    assert set(await search_ids(catalog, last)) == {linked.id, later.id}

    # Renamed: found by the new name only.
    await catalog.UpdateAuthor(
        pb.UpdateAuthorRequest(
            author=pb.Author(id=author.id, last_name=renamed),
            update_mask=FieldMask(paths=["last_name"]),
        )
    )
    assert await search_ids(catalog, last) == []
    assert set(await search_ids(catalog, renamed)) == {linked.id, later.id}
    shown = (await catalog.GetBook(pb.GetBookRequest(id=linked.id))).book
    assert shown.authors[0].display_name == f"Jo {renamed}"

    # Unlinked: no longer found by the name.
    await catalog.UpdateBook(
        pb.UpdateBookRequest(book=pb.Book(id=later.id), update_mask=FieldMask(paths=["authors"]))
    )
    assert await search_ids(catalog, renamed) == [linked.id]
