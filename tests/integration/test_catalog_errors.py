"""Every class of hostile or edge-case input, and every class of store failure, answers
its exact status with details, through gRPC against the real services (review D5, D8)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.stack import Stack
from cloudshelf.governance.v1 import governance_pb2, governance_pb2_grpc
from cloudshelf.runtime import paging
from tests.conftest import ChannelTo, ServiceSpawner, wait_for_health
from tests.error_details import Details, details_of_error, raw_call
from tests.factories import book, word

if TYPE_CHECKING:
    Catalog: TypeAlias = catalog_pb2_grpc.CatalogServiceAsyncStub
Code = grpc.StatusCode
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


async def refused(call: Awaitable[Any], code: Code, *words: str) -> Details:
    """Awaits a call that must fail with `code` and details naming `words`; every answer
    carries an ErrorInfo of our domain, and INVALID_ARGUMENT a field violation."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = details_of_error(caught.value)
    assert details.code == code, f"expected {code.name}, got {details.code.name}: {details.message}"
    for word_ in words:
        assert word_ in details.message, f"{word_!r} not in {details.message!r}"
    assert details.error_info is not None and details.error_info.domain == "cloudshelf.dev"
    if code == Code.INVALID_ARGUMENT:
        assert details.bad_request is not None and details.fields
    return details


async def _new_book(catalog: Catalog, **fields: Any) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(**fields)))).book


# --- undecodable requests ----------------------------------------------------------------


async def test_invalid_utf8_is_invalid_argument_without_python_names(
    channel_to: Callable[[str], grpc.aio.Channel],
) -> None:
    channel = channel_to("catalog")
    valid = pb.CreateBookRequest(book=book()).SerializeToString()
    # book (field 1) holding title (field 4) with bytes that are not UTF-8, appended: the
    # parser merges it into the book.
    title = b"\x22\x04ab\xff\xfe"
    raw = valid + b"\x0a" + bytes([len(title)]) + title
    call = raw_call(channel, "/cloudshelf.catalog.v1.CatalogService/CreateBook", raw)
    details = await refused(call, Code.INVALID_ARGUMENT, "request:", "CreateBookRequest")
    assert "DecodeError" not in details.message and "<class" not in details.message
    assert details.error_info is not None and details.error_info.reason == "UNDECODABLE_REQUEST"


# --- control characters ------------------------------------------------------------------


def _control_cases() -> Iterator[tuple[str, Callable[[Catalog], Awaitable[Any]], str]]:
    nul = "bad\x00value"
    yield "book.title", lambda c: c.CreateBook(pb.CreateBookRequest(book=book(title=nul))), "0000"
    yield (
        "book.description",
        lambda c: c.CreateBook(pb.CreateBookRequest(book=book(description="a\x1b[2Jb"))),
        "001B",
    )
    yield (
        "book.cover_image_url",
        lambda c: c.CreateBook(pb.CreateBookRequest(book=book(cover_image_url=nul))),
        "0000",
    )
    yield (
        "review.user_id",
        lambda c: c.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=1, user_id=nul))),
        "0000",
    )
    yield (
        "author.last_name",
        lambda c: c.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name="A", last_name=nul))
        ),
        "0000",
    )
    yield (
        "publisher.name",
        lambda c: c.CreatePublisher(pb.CreatePublisherRequest(publisher=pb.Publisher(name=nul))),
        "0000",
    )
    yield (
        "category.name",
        lambda c: c.CreateCategory(pb.CreateCategoryRequest(category=pb.Category(name=nul))),
        "0000",
    )
    yield "query", lambda c: c.SearchBooks(pb.SearchBooksRequest(query=nul)), "0000"
    yield (
        "last_name_prefix",
        lambda c: c.ListAuthors(pb.ListAuthorsRequest(last_name_prefix="\x7f\x01")),
        "0001",
    )
    yield "slug", lambda c: c.GetBook(pb.GetBookRequest(slug="a\x00")), "0000"
    yield (
        "request_id",
        lambda c: c.AdjustInventory(
            pb.AdjustInventoryRequest(
                adjustments=[pb.InventoryAdjustment(book_id=1, delta=1)], request_id=nul
            )
        ),
        "0000",
    )
    yield (
        "update_mask.paths[1]",
        lambda c: c.UpdateBook(
            pb.UpdateBookRequest(
                book=pb.Book(id=1), update_mask=FieldMask(paths=["title", "price\x00"])
            )
        ),
        "0000",
    )
    yield "page_token", lambda c: c.ListBooks(pb.ListBooksRequest(page_token="\x00")), "0000"


@pytest.mark.parametrize(
    ("field", "call", "character"), list(_control_cases()), ids=[c[0] for c in _control_cases()]
)
async def test_control_characters_are_refused_naming_the_field(
    catalog: Catalog, field: str, call: Callable[[Catalog], Awaitable[Any]], character: str
) -> None:
    details = await refused(
        call(catalog),
        Code.INVALID_ARGUMENT,
        f"{field}: contains the control character U+{character}",
    )
    assert details.fields == [field]
    assert details.error_info is not None and details.error_info.reason == "CONTROL_CHARACTER"


async def test_tab_newline_and_carriage_return_are_kept(catalog: Catalog) -> None:
    created = await _new_book(catalog, description="Part one.\r\n\tPart two.\n")
    assert created.description == "Part one.\r\n\tPart two."  # stripped at the ends only


# --- ids beyond what the store holds -----------------------------------------------------


@pytest.mark.parametrize("book_id", [2**31, 2**40, INT64_MAX])
async def test_unknown_ids_beyond_int32_are_not_found(catalog: Catalog, book_id: int) -> None:
    await refused(catalog.GetBook(pb.GetBookRequest(id=book_id)), Code.NOT_FOUND, str(book_id))
    await refused(catalog.RecordView(pb.RecordViewRequest(book_id=book_id)), Code.NOT_FOUND)
    await refused(catalog.ListReviews(pb.ListReviewsRequest(book_id=book_id)), Code.NOT_FOUND)
    await refused(
        catalog.UpdateBook(
            pb.UpdateBookRequest(book=pb.Book(id=book_id, title="t"), update_mask=_mask("title"))
        ),
        Code.NOT_FOUND,
    )
    await refused(
        catalog.AdjustInventory(
            pb.AdjustInventoryRequest(
                adjustments=[pb.InventoryAdjustment(book_id=book_id, delta=1)]
            )
        ),
        Code.NOT_FOUND,
        f"no book with id {book_id}",
    )
    for lookup in (
        catalog.ListBooks(pb.ListBooksRequest(category_id=book_id)),
        catalog.SearchBooks(pb.SearchBooksRequest(query="x", category_id=book_id)),
        catalog.ListPopularBooks(pb.ListPopularBooksRequest(category_id=book_id)),
        catalog.ListCategories(pb.ListCategoriesRequest(parent_category_id=book_id)),
        catalog.UpdateCategory(
            pb.UpdateCategoryRequest(
                category=pb.Category(id=book_id, name="n"), update_mask=_mask("name")
            )
        ),
        catalog.UpdateCategory(
            pb.UpdateCategoryRequest(
                category=pb.Category(id=book_id, parent_category_id=1),
                update_mask=_mask("parent_category_id"),
            )
        ),
        catalog.UpdateAuthor(
            pb.UpdateAuthorRequest(author=pb.Author(id=book_id, bio="b"), update_mask=_mask("bio"))
        ),
        catalog.UpdatePublisher(
            pb.UpdatePublisherRequest(
                publisher=pb.Publisher(id=book_id, country="c"), update_mask=_mask("country")
            )
        ),
        catalog.UpdateReview(
            pb.UpdateReviewRequest(
                review=pb.Review(id=book_id, rating=3), update_mask=_mask("rating")
            )
        ),
        catalog.ModerateReview(
            pb.ModerateReviewRequest(review_id=book_id, status=pb.REVIEW_STATUS_REJECTED)
        ),
        catalog.DeleteReview(pb.DeleteReviewRequest(review_id=book_id)),
    ):
        await refused(lookup, Code.NOT_FOUND, str(book_id))


@pytest.mark.parametrize(
    ("field", "call"),
    [
        (
            "book.category_id",
            lambda c: c.CreateBook(pb.CreateBookRequest(book=book(category_id=2**31))),
        ),
        (
            "book.publisher_id",
            lambda c: c.CreateBook(pb.CreateBookRequest(book=book(publisher_id=2**40))),
        ),
        (
            "book.series_id",
            lambda c: c.CreateBook(pb.CreateBookRequest(book=book(series_id=INT64_MAX))),
        ),
        (
            "book.authors[0].author_id",
            lambda c: c.CreateBook(
                pb.CreateBookRequest(book=book(authors=[pb.BookAuthor(author_id=2**31)]))
            ),
        ),
        (
            "review.book_id",
            lambda c: c.AddReview(
                pb.AddReviewRequest(review=pb.Review(book_id=2**31, user_id="u", rating=4))
            ),
        ),
        (
            "category.parent_category_id",
            lambda c: c.CreateCategory(
                pb.CreateCategoryRequest(
                    category=pb.Category(name=word(), parent_category_id=2**31)
                )
            ),
        ),
    ],
)
async def test_references_beyond_int32_are_invalid_argument_naming_the_field(
    catalog: Catalog, field: str, call: Callable[[Catalog], Awaitable[Any]]
) -> None:
    details = await refused(call(catalog), Code.INVALID_ARGUMENT, field, "2147483647")
    assert details.fields == [field]


async def test_batch_get_lists_ids_beyond_int32_as_missing(catalog: Catalog) -> None:
    known = await _new_book(catalog)
    found = await catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[2**40, known.id, 2**31]))
    assert [b.id for b in found.books] == [known.id]
    assert list(found.missing_ids) == [2**40, 2**31]
    await refused(
        catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[known.id, -5])),
        Code.INVALID_ARGUMENT,
        "ids[1]",
    )


# --- numeric overflow --------------------------------------------------------------------


async def test_stock_past_int32_is_failed_precondition(catalog: Catalog) -> None:
    target = await _new_book(catalog)

    def adjust(delta: int) -> Awaitable[pb.AdjustInventoryResponse]:
        request = pb.AdjustInventoryRequest(
            adjustments=[pb.InventoryAdjustment(book_id=target.id, delta=delta)]
        )
        return catalog.AdjustInventory(request)

    assert (await adjust(INT32_MAX)).stock_levels[0].stock_quantity == INT32_MAX
    details = await refused(adjust(1), Code.FAILED_PRECONDITION, "smaller change")
    assert details.error_info is not None and details.error_info.reason == "VALUE_OUT_OF_RANGE"
    shown = await catalog.GetBook(pb.GetBookRequest(id=target.id))
    assert shown.book.stock_quantity == INT32_MAX


async def test_adjustments_adding_up_past_int32_are_invalid_argument(catalog: Catalog) -> None:
    target = await _new_book(catalog)
    request = pb.AdjustInventoryRequest(
        adjustments=[pb.InventoryAdjustment(book_id=target.id, delta=INT32_MAX)] * 2
    )
    await refused(
        catalog.AdjustInventory(request), Code.INVALID_ARGUMENT, "adjustments[1].delta", "add up"
    )


# --- page tokens -------------------------------------------------------------------------


def _unsigned(position: dict[str, Any], query: Any) -> str:
    """A token as the previous release made them: anyone could write one."""
    payload = json.dumps({"p": position, "q": paging._fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.fixture
def stack_key(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Signs tokens in this process with the stack's key: what an attacker holding the key
    (or an older release with another shape) could send."""
    monkeypatch.setenv(paging.PAGE_TOKEN_KEY_ENV, stack.page_token_key)
    paging.page_token_key.cache_clear()
    yield
    paging.page_token_key.cache_clear()


async def test_forged_unsigned_tokens_are_invalid_argument(catalog: Catalog) -> None:
    search = {"offset": -20}
    for call in (
        catalog.SearchBooks(pb.SearchBooksRequest(query="x", page_token=_unsigned(search, {}))),
        catalog.SearchBooks(pb.SearchBooksRequest(page_token=_unsigned({"offset": "x"}, {}))),
        catalog.ListBooks(pb.ListBooksRequest(page_token=_unsigned({"after": 2**70}, {}))),
        catalog.ListReviews(
            pb.ListReviewsRequest(book_id=1, page_token=_unsigned({"before": [1]}, {}))
        ),
        # Reached the database with a wrong argument count and came back UNAVAILABLE.
        catalog.ListAuthors(pb.ListAuthorsRequest(page_token=_unsigned({"after": [1]}, {}))),
        catalog.ListPublishers(pb.ListPublishersRequest(page_token="eyJwIjp7fX0")),
    ):
        details = await refused(call, Code.INVALID_ARGUMENT, "page_token: not a token")
        assert details.fields == ["page_token"]
        assert details.error_info is not None
        assert details.error_info.reason == "INVALID_PAGE_TOKEN"


async def test_a_changed_token_is_invalid_argument(catalog: Catalog) -> None:
    for _ in range(3):
        await catalog.CreatePublisher(
            pb.CreatePublisherRequest(publisher=pb.Publisher(name=word()))
        )
    page = await catalog.ListPublishers(pb.ListPublishersRequest(page_size=1))
    token = page.next_page_token
    assert token
    following = await catalog.ListPublishers(
        pb.ListPublishersRequest(page_size=1, page_token=token)
    )
    assert following.publishers[0].id != page.publishers[0].id
    payload, mac = token.split(".")
    changed = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac
    await refused(
        catalog.ListPublishers(pb.ListPublishersRequest(page_size=1, page_token=changed)),
        Code.INVALID_ARGUMENT,
        "page_token",
    )
    await refused(
        catalog.ListPublishers(pb.ListPublishersRequest(page_size=2, page_token=token)),
        Code.INVALID_ARGUMENT,
        "page_token: belongs to a different query",
    )


@pytest.mark.usefixtures("stack_key")
async def test_signed_tokens_with_bad_positions_are_invalid_argument(catalog: Catalog) -> None:
    size = {"size": 20}
    for call, problem in (
        (
            catalog.ListBooks(
                pb.ListBooksRequest(
                    page_token=paging.encode_page_token({"after": -1}, {"category": 0, **size})
                )
            ),
            "between 0 and 2147483647",
        ),
        (
            catalog.ListAuthors(
                pb.ListAuthorsRequest(
                    page_token=paging.encode_page_token({"after": [1]}, {"prefix": "", **size})
                )
            ),
            "list of 3 values",
        ),
        (
            catalog.ListPublishers(
                pb.ListPublishersRequest(
                    page_token=paging.encode_page_token({"after": ["a", "b"]}, size)
                )
            ),
            "after[1] must be an integer",
        ),
        (
            catalog.ListReviews(
                pb.ListReviewsRequest(
                    book_id=1,
                    page_token=paging.encode_page_token(
                        {"before": 0}, {"book": 1, "status": 0, **size}
                    ),
                )
            ),
            "between 1 and",
        ),
        (
            catalog.ListCategories(
                pb.ListCategoriesRequest(
                    page_token=paging.encode_page_token(
                        {"after": True}, {"parent": 0, "direct": False, **size}
                    )
                )
            ),
            "must be an integer",
        ),
    ):
        await refused(call, Code.INVALID_ARGUMENT, "page_token", problem)


@pytest.mark.usefixtures("stack_key")
async def test_a_signed_token_of_deeply_nested_json_is_invalid_argument(catalog: Catalog) -> None:
    nested = b"[" * 1500
    mac = paging._mac(nested)
    token = f"{paging._b64encode(nested)}.{paging._b64encode(mac)}"
    await refused(
        catalog.ListBooks(pb.ListBooksRequest(page_token=token)),
        Code.INVALID_ARGUMENT,
        "page_token: not a token",
    )


# --- fields CreateBook would drop --------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"stock_quantity": 5}, "book.stock_quantity", ("AdjustInventory",)),
        ({"id": 77}, "book.id", ("assigns ids",)),
        ({"rating_average": 4.5}, "book.rating_average", ("output only",)),
        ({"rating_count": 3}, "book.rating_count", ("output only",)),
        ({"view_count": 9}, "book.view_count", ("output only",)),
        ({"purchase_count": 9}, "book.purchase_count", ("output only",)),
        ({"create_time": Timestamp(seconds=1)}, "book.create_time", ("output only",)),
        ({"update_time": Timestamp(seconds=1)}, "book.update_time", ("output only",)),
        (
            {"authors": [pb.BookAuthor(author_id=1, display_name="Someone")]},
            "book.authors[0].display_name",
            ("output only",),
        ),
    ],
)
async def test_create_book_refuses_fields_it_would_drop(
    catalog: Catalog, fields: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    details = await refused(
        catalog.CreateBook(pb.CreateBookRequest(book=book(**fields))),
        Code.INVALID_ARGUMENT,
        field,
        *words,
    )
    assert details.fields == [field]


# --- RPCs not built yet ------------------------------------------------------------------


async def test_rpcs_not_built_yet_are_unimplemented(channel_to: ChannelTo) -> None:
    # (Every AnalyticsService RPC is built now.)
    governance = governance_pb2_grpc.GovernanceServiceStub(channel_to("governance"))
    for call, method in (
        (
            governance.ListClassifications(governance_pb2.ListClassificationsRequest()),
            "cloudshelf.governance.v1.GovernanceService/ListClassifications",
        ),
    ):
        details = await refused(call, Code.UNIMPLEMENTED, f"{method} is not implemented yet")
        assert details.error_info is not None
        assert details.error_info.reason == "NOT_IMPLEMENTED"


# --- store failures ----------------------------------------------------------------------


def _mask(*paths: str) -> FieldMask:
    return FieldMask(paths=list(paths))


async def test_statement_timeout_is_deadline_exceeded_and_conflicts_are_retried(
    stack: Stack, spawn_service: ServiceSpawner, catalog: Catalog
) -> None:
    # Repeatable read makes a write that waited on a concurrent update fail with a
    # serialization error (40001); a 1 s statement timeout makes a long wait fail.
    dsn = stack.postgres.dsn("catalog")
    settings = "?default_transaction_isolation=repeatable%20read&statement_timeout=1000"
    process, address = spawn_service("catalog", CLOUDSHELF_POSTGRES_DSN=dsn + settings)
    wait_for_health(address, "SERVING")
    target = await _new_book(catalog)
    locker = await asyncpg.connect(dsn)
    try:
        async with spawn_service.channel(address) as channel:
            strict: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[assignment]

            # A row lock held past the statement timeout.
            async with locker.transaction():
                await locker.execute(
                    "SELECT 1 FROM book_catalog.books WHERE id = $1 FOR UPDATE", target.id
                )
                details = await refused(
                    strict.AdjustInventory(
                        pb.AdjustInventoryRequest(
                            adjustments=[pb.InventoryAdjustment(book_id=target.id, delta=1)]
                        ),
                        timeout=10,
                    ),
                    Code.DEADLINE_EXCEEDED,
                    "statement timeout",
                )
                assert details.error_info is not None
                assert details.error_info.reason == "STORE_TIMEOUT"

            # A concurrent update committed while UpdateBook waited for the row: its first
            # attempt fails to serialize, the retry applies the change.
            async with locker.transaction():
                await locker.execute(
                    "UPDATE book_catalog.books SET subtitle = 'concurrent' WHERE id = $1",
                    target.id,
                )
                request = pb.UpdateBookRequest(
                    book=pb.Book(id=target.id, title="Retried"), update_mask=_mask("title")
                )

                async def update_book() -> pb.UpdateBookResponse:
                    return await strict.UpdateBook(request, timeout=10)

                update = asyncio.create_task(update_book())
                await asyncio.sleep(0.4)  # UpdateBook now waits for the row lock
                assert not update.done()
            updated = await update
            assert (updated.book.title, updated.book.subtitle) == ("Retried", "concurrent")
        log = process.log_file.read_text()
        assert "UpdateBook: retrying once after could not serialize access" in log
    finally:
        await locker.close()


async def test_a_read_only_database_is_unavailable(
    stack: Stack, spawn_service: ServiceSpawner, catalog: Catalog
) -> None:
    # What a client sees when connected to a primary that was demoted by a failover.
    dsn = stack.postgres.dsn("catalog") + "?default_transaction_read_only=on"
    _, address = spawn_service("catalog", CLOUDSHELF_POSTGRES_DSN=dsn)
    wait_for_health(address, "SERVING")
    existing = await _new_book(catalog)
    async with spawn_service.channel(address) as channel:
        read_only: Catalog = catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[assignment]
        shown = await read_only.GetBook(pb.GetBookRequest(id=existing.id))
        assert shown.book.id == existing.id
        details = await refused(
            read_only.CreateAuthor(
                pb.CreateAuthorRequest(author=pb.Author(first_name="Read", last_name="Only"))
            ),
            Code.UNAVAILABLE,
            "read-only transaction",
            "retry later",
        )
        assert details.error_info is not None
        assert details.error_info.metadata["sqlstate"] == "25006"
