"""The server interceptor on a real grpc.aio server in this process, with the tracing
interceptor in front as in every service: undecodable requests, control characters in any
string field, the retry after a deadlock, UNIMPLEMENTED stubs and INTERNAL bugs, each with
its status details."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
import pytest_asyncio
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.errors import NotFound
from cloudshelf.runtime.rpc import ServerErrorInterceptor, ServicerContext
from cloudshelf.runtime.telemetry import NOT_HEALTH_CHECK
from tests.error_details import Details, details_of_error, raw_call

GET_BOOK = "/cloudshelf.catalog.v1.CatalogService/GetBook"
DEADLOCK_ONCE, ALWAYS_CONFLICT, BUG, FAILOVER, NOT_FOUND = 1, 2, 3, 4, 5


class ScriptedCatalog(catalog_pb2_grpc.CatalogServiceServicer):
    """GetBook fails as its id says; CreateBook echoes. Other RPCs are left to the
    generated base class, as in a service not built yet."""

    def __init__(self) -> None:
        self.attempts: Counter[int] = Counter()

    async def GetBook(
        self, request: catalog_pb2.GetBookRequest, context: ServicerContext
    ) -> catalog_pb2.GetBookResponse:
        self.attempts[request.id] += 1
        match request.id:
            case 1 if self.attempts[request.id] == 1:
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
            case 2:
                raise asyncpg.exceptions.SerializationError(
                    "could not serialize access due to concurrent update"
                )
            case 3:
                raise KeyError("a bug")
            case 4:
                raise asyncpg.exceptions.AdminShutdownError(
                    "terminating connection due to administrator command"
                )
            case 5:
                raise NotFound("no book with id 5")
        return catalog_pb2.GetBookResponse(book=catalog_pb2.Book(id=request.id, slug=request.slug))

    async def CreateBook(
        self, request: catalog_pb2.CreateBookRequest, context: ServicerContext
    ) -> catalog_pb2.CreateBookResponse:
        return catalog_pb2.CreateBookResponse(book=request.book)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[ScriptedCatalog, grpc.aio.Channel]]:
    server = grpc.aio.server(
        interceptors=[
            aio_server_interceptor(filter_=NOT_HEALTH_CHECK),  # type: ignore[no-untyped-call]
            ServerErrorInterceptor(),
        ]
    )
    servicer = ScriptedCatalog()  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, channel
    finally:
        await channel.close()
        await server.stop(0)


async def _fails(call: object) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = details_of_error(caught.value)
    assert details.error_info is not None, f"no ErrorInfo on {details.code}: {details.message}"
    assert details.error_info.domain == "cloudshelf.dev"
    return details


def _stub(channel: grpc.aio.Channel) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    return catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[return-value]


async def test_a_deadlock_is_retried_once_and_the_retry_answers(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
) -> None:
    servicer, channel = served
    response = await _stub(channel).GetBook(catalog_pb2.GetBookRequest(id=DEADLOCK_ONCE))
    assert response.book.id == DEADLOCK_ONCE
    assert servicer.attempts[DEADLOCK_ONCE] == 2


async def _get_book_fails(channel: grpc.aio.Channel, book_id: int, reason: str) -> Details:
    details = await _fails(_stub(channel).GetBook(catalog_pb2.GetBookRequest(id=book_id)))
    assert details.error_info is not None and details.error_info.reason == reason
    return details


async def test_a_second_conflict_is_aborted(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
) -> None:
    servicer, channel = served
    details = await _get_book_fails(channel, ALWAYS_CONFLICT, "TRANSACTION_CONFLICT")
    assert details.code == grpc.StatusCode.ABORTED and "retry" in details.message
    assert servicer.attempts[ALWAYS_CONFLICT] == 2


async def test_other_errors_are_not_retried(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
) -> None:
    servicer, channel = served
    details = await _get_book_fails(channel, FAILOVER, "STORE_UNAVAILABLE")
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.error_info is not None
    assert details.error_info.metadata["sqlstate"] == "57P01"
    details = await _get_book_fails(channel, NOT_FOUND, "NOT_FOUND")
    assert (details.code, details.message) == (grpc.StatusCode.NOT_FOUND, "no book with id 5")
    assert servicer.attempts[FAILOVER] == servicer.attempts[NOT_FOUND] == 1


async def test_a_bug_is_internal_with_a_trace_id(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
) -> None:
    _, channel = served
    details = await _get_book_fails(channel, BUG, "INTERNAL")
    assert details.code == grpc.StatusCode.INTERNAL
    assert details.message.startswith("internal error (trace id ")
    assert "KeyError" not in details.message


async def test_an_rpc_not_built_yet_is_unimplemented(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
) -> None:
    _, channel = served
    details = await _fails(_stub(channel).ListAuthors(catalog_pb2.ListAuthorsRequest()))
    assert details.code == grpc.StatusCode.UNIMPLEMENTED
    assert details.message == (
        "cloudshelf.catalog.v1.CatalogService/ListAuthors is not implemented yet"
    )
    assert details.error_info is not None and details.error_info.reason == "NOT_IMPLEMENTED"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x22\x02\xff\xfe",  # slug (field 4) holding bytes that are not UTF-8
        b"\x22\x05ab\xc3\x28z",  # an invalid two-byte sequence inside
        b"\x22\x10abc",  # a length past the end of the message
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint of 11 bytes
        b"\x0f",  # wire type 7 does not exist
    ],
)
async def test_undecodable_requests_are_invalid_argument(
    served: tuple[ScriptedCatalog, grpc.aio.Channel], raw: bytes
) -> None:
    _, channel = served
    details = await _fails(raw_call(channel, GET_BOOK, raw))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.message.startswith("request: the bytes are not a valid ")
    assert "cloudshelf.catalog.v1.GetBookRequest" in details.message
    for leak in ("DecodeError", "<class", "Exception", "Traceback"):
        assert leak not in details.message
    assert details.fields == ["request"]
    assert details.error_info is not None and details.error_info.reason == "UNDECODABLE_REQUEST"


async def test_valid_utf8_still_decodes(served: tuple[ScriptedCatalog, grpc.aio.Channel]) -> None:
    _, channel = served
    raw = catalog_pb2.GetBookRequest(slug="livre-été").SerializeToString()
    answer = await raw_call(channel, GET_BOOK, raw)
    assert catalog_pb2.GetBookResponse.FromString(answer).book.slug == "livre-été"


@pytest.mark.parametrize(
    ("book", "field", "character"),
    [
        (catalog_pb2.Book(title="a\x00b"), "book.title", "U+0000"),
        (catalog_pb2.Book(title="ok", subtitle="bell\x07"), "book.subtitle", "U+0007"),
        (catalog_pb2.Book(description="\x1b[31mred"), "book.description", "U+001B"),
        (
            catalog_pb2.Book(
                authors=[
                    catalog_pb2.BookAuthor(display_name="fine"),
                    catalog_pb2.BookAuthor(display_name="x\x0bz"),
                ]
            ),
            "book.authors[1].display_name",
            "U+000B",
        ),
        (
            catalog_pb2.Book(price=common_pb2.Money(currency_code="US\x00")),
            "book.price.currency_code",
            "U+0000",
        ),
    ],
)
async def test_control_characters_are_refused_in_any_string_field(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
    book: catalog_pb2.Book,
    field: str,
    character: str,
) -> None:
    _, channel = served
    request = catalog_pb2.CreateBookRequest(book=book)
    details = await _fails(_stub(channel).CreateBook(request))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.message.startswith(f"{field}: contains the control character {character}")
    assert details.fields == [field]
    assert details.error_info is not None and details.error_info.reason == "CONTROL_CHARACTER"


async def test_tab_newline_and_carriage_return_are_text(
    served: tuple[ScriptedCatalog, grpc.aio.Channel],
) -> None:
    _, channel = served
    text = "line one\r\nline\ttwo\n"
    response = await _stub(channel).CreateBook(
        catalog_pb2.CreateBookRequest(book=catalog_pb2.Book(description=text))
    )
    assert response.book.description == text
