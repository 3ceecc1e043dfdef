"""Books through the catalog's gRPC API: create, read, update, batch, list, validation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.common.v1 import common_pb2
from tests.conftest import expect_error
from tests.factories import book, isbn10, isbn13, usd, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def create(catalog: CatalogServiceAsyncStub, **fields: object) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(**fields)))).book  # type: ignore[arg-type]


async def test_create_then_get_by_every_key(catalog: CatalogServiceAsyncStub) -> None:
    author = (
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="Ada", last_name=word()))
        )
    ).author
    created = await create(
        catalog,
        isbn_10=isbn10(),
        subtitle="A subtitle",
        list_price=usd(2499),
        publication_date=common_pb2.Date(year=2020, month=2, day=29),
        authors=[pb.BookAuthor(author_id=author.id)],
    )
    assert created.id > 0 and created.status == pb.BOOK_STATUS_ACTIVE
    assert created.price == usd(1999) and created.list_price == usd(2499)
    assert created.slug and created.authors[0].display_name == f"Ada {author.last_name}"
    assert created.authors[0].role == pb.AUTHOR_ROLE_AUTHOR and created.authors[0].order_index == 1
    for request in (
        pb.GetBookRequest(id=created.id),
        pb.GetBookRequest(isbn_13=created.isbn_13),
        pb.GetBookRequest(isbn_10=created.isbn_10),
        pb.GetBookRequest(slug=created.slug),
    ):
        assert (await catalog.GetBook(request)).book == created


async def test_isbn_with_hyphens_is_normalized(catalog: CatalogServiceAsyncStub) -> None:
    raw = isbn13()
    hyphenated = f"{raw[:3]}-{raw[3:5]}-{raw[5:12]}-{raw[12]}"
    created = await create(catalog, isbn_13=hyphenated)
    assert created.isbn_13 == raw


async def test_unknown_books_are_not_found(catalog: CatalogServiceAsyncStub) -> None:
    await expect_error(
        catalog.GetBook(pb.GetBookRequest(id=2_000_000_000)),
        grpc.StatusCode.NOT_FOUND,
        "2000000000",
    )
    await expect_error(
        catalog.GetBook(pb.GetBookRequest(isbn_13=isbn13())), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        catalog.UpdateBook(
            pb.UpdateBookRequest(
                book=pb.Book(id=2_000_000_000, title="x"), update_mask=FieldMask(paths=["title"])
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_every_validation_error_names_its_field(catalog: CatalogServiceAsyncStub) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"isbn_13": "9780306406158"}, "book.isbn_13"),  # wrong check digit
        ({"isbn_13": "12345"}, "book.isbn_13"),
        ({"isbn_13": "", "isbn_10": "0306406153"}, "book.isbn_10"),
        ({"isbn_13": ""}, "isbn"),  # neither ISBN
        ({"title": " "}, "book.title"),
        ({"title": "x" * 501}, "book.title"),
        ({"price": usd(-1)}, "book.price"),
        ({"price": usd(1_000_000)}, "book.price"),
        (
            {"price": common_pb2.Money(minor_units=100, currency_code="EUR")},
            "book.price.currency_code",
        ),
        ({"list_price": usd(1000)}, "book.list_price"),  # below the price
        ({"format": 42}, "book.format"),
        ({"status": 42}, "book.status"),
        ({"page_count": -3}, "book.page_count"),
        ({"language_code": "english!"}, "book.language_code"),
        (
            {"publication_date": common_pb2.Date(year=2021, month=2, day=30)},
            "book.publication_date",
        ),
        ({"slug": "Not A Slug"}, "book.slug"),
        ({"authors": [pb.BookAuthor(author_id=0)]}, "book.authors[0].author_id"),
    ]
    for fields, field in cases:
        await expect_error(
            catalog.CreateBook(pb.CreateBookRequest(book=book(**fields))), INVALID, field
        )
    # A missing price is its own case: the factory always sets one.
    no_price = book()
    no_price.ClearField("price")
    await expect_error(
        catalog.CreateBook(pb.CreateBookRequest(book=no_price)), INVALID, "book.price"
    )


async def test_references_and_duplicates(catalog: CatalogServiceAsyncStub) -> None:
    await expect_error(
        catalog.CreateBook(pb.CreateBookRequest(book=book(category_id=2_000_000_000))),
        grpc.StatusCode.NOT_FOUND,
        "category_id",
    )
    await expect_error(
        catalog.CreateBook(
            pb.CreateBookRequest(book=book(authors=[pb.BookAuthor(author_id=2_000_000_000)]))
        ),
        grpc.StatusCode.NOT_FOUND,
        "author",
    )
    first = await create(catalog)
    await expect_error(
        catalog.CreateBook(pb.CreateBookRequest(book=book(isbn_13=first.isbn_13))),
        grpc.StatusCode.ALREADY_EXISTS,
        "isbn_13",
    )
    # A failed write leaves nothing behind: the ISBN of the failed book is still free.
    failed = book(category_id=2_000_000_000)
    await expect_error(
        catalog.CreateBook(pb.CreateBookRequest(book=failed)), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        catalog.GetBook(pb.GetBookRequest(isbn_13=failed.isbn_13)), grpc.StatusCode.NOT_FOUND
    )


async def test_update_writes_only_the_masked_fields(catalog: CatalogServiceAsyncStub) -> None:
    created = await create(catalog, subtitle="keep me")
    change = pb.Book(id=created.id, title="A new title", subtitle="ignored", price=usd(2500))
    updated = (
        await catalog.UpdateBook(
            pb.UpdateBookRequest(book=change, update_mask=FieldMask(paths=["title", "price"]))
        )
    ).book
    assert updated.title == "A new title" and updated.price == usd(2500)
    assert updated.subtitle == "keep me"
    assert updated.isbn_13 == created.isbn_13


async def test_update_mask_errors(catalog: CatalogServiceAsyncStub) -> None:
    created = await create(catalog)
    for paths, words in (
        ([], ("update_mask",)),
        (["stock_quantity"], ("update_mask", "AdjustInventory")),
        (["rating_average"], ("update_mask",)),
        (["nonsense"], ("update_mask",)),
    ):
        request = pb.UpdateBookRequest(
            book=pb.Book(id=created.id), update_mask=FieldMask(paths=paths)
        )
        await expect_error(catalog.UpdateBook(request), INVALID, *words)
    with_list_price = await create(catalog, list_price=usd(2999))
    raise_price = pb.Book(id=with_list_price.id, price=usd(3500))
    await expect_error(
        catalog.UpdateBook(
            pb.UpdateBookRequest(book=raise_price, update_mask=FieldMask(paths=["price"]))
        ),
        INVALID,
        "book.list_price",
    )


async def test_update_is_seen_at_once_through_the_cache(catalog: CatalogServiceAsyncStub) -> None:
    created = await create(catalog)
    for _ in range(3):  # now cached
        assert (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book.price == usd(1999)
    await catalog.UpdateBook(
        pb.UpdateBookRequest(
            book=pb.Book(id=created.id, price=usd(1499)), update_mask=FieldMask(paths=["price"])
        )
    )
    assert (await catalog.GetBook(pb.GetBookRequest(id=created.id))).book.price == usd(1499)
    batch = await catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[created.id]))
    assert batch.books[0].price == usd(1499)


async def test_batch_get_lists_missing_ids_in_request_order(
    catalog: CatalogServiceAsyncStub,
) -> None:
    a, b = await create(catalog), await create(catalog)
    response = await catalog.BatchGetBooks(
        pb.BatchGetBooksRequest(ids=[b.id, 2_000_000_000, a.id, b.id])
    )
    assert [x.id for x in response.books] == [b.id, a.id]
    assert list(response.missing_ids) == [2_000_000_000]
    await expect_error(
        catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[a.id, -1])), INVALID, "ids[1]"
    )


async def test_list_books_covers_subcategories_and_pages(catalog: CatalogServiceAsyncStub) -> None:
    root = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name=f"Root {word()}"))
        )
    ).category
    child = (
        await catalog.CreateCategory(
            pb.CreateCategoryRequest(
                category=pb.Category(name=f"Child {word()}", parent_category_id=root.id)
            )
        )
    ).category
    ids = {(await create(catalog, category_id=c)).id for c in (root.id, child.id, child.id)}
    seen: list[int] = []
    token = ""
    while True:
        page = await catalog.ListBooks(
            pb.ListBooksRequest(category_id=root.id, page_size=2, page_token=token)
        )
        seen += [x.id for x in page.books]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    only_child = await catalog.ListBooks(pb.ListBooksRequest(category_id=child.id, page_size=10))
    assert len(only_child.books) == 2
    await expect_error(
        catalog.ListBooks(pb.ListBooksRequest(category_id=2_000_000_000)), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        catalog.ListBooks(pb.ListBooksRequest(category_id=root.id, page_token="garbage")),
        INVALID,
        "page_token",
    )
