"""The one mapping from exceptions to statuses, for each class of exception the services
meet: domain errors, PostgreSQL (asyncpg, constructed as asyncpg raises them), Redis, AWS
(botocore) and the network."""

from __future__ import annotations

import errno

import asyncpg
import grpc
import pytest
import redis.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from cloudshelf.runtime.errors import (
    ERROR_DOMAIN,
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    is_transaction_conflict,
    is_unavailable,
    status_for,
)
from tests.error_details import details_of

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (InvalidArgument("book.price", "must be >= 0"), Code.INVALID_ARGUMENT, "INVALID_FIELD"),
        (NotFound("book 7 not found"), Code.NOT_FOUND, "NOT_FOUND"),
        (AlreadyExists("review exists"), Code.ALREADY_EXISTS, "ALREADY_EXISTS"),
        (FailedPrecondition("stock"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
        (Aborted("version moved"), Code.ABORTED, "CONCURRENT_CHANGE"),
        (Unavailable("down"), Code.UNAVAILABLE, "UNAVAILABLE"),
        (PermissionDenied("no"), Code.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (Unauthenticated("who"), Code.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (NotFound("x", reason="NO_SUCH_CART"), Code.NOT_FOUND, "NO_SUCH_CART"),
    ],
)
def test_domain_errors_map_to_their_status(error: Exception, code: Code, reason: str) -> None:
    mapped = status_for(error)
    assert mapped is not None
    assert (mapped.code, mapped.message, mapped.reason) == (code, str(error), reason)


def test_invalid_argument_names_the_field_in_message_and_details() -> None:
    mapped = status_for(InvalidArgument("book.isbn_13", "bad check digit"))
    assert mapped is not None
    assert (mapped.code, mapped.message) == (Code.INVALID_ARGUMENT, "book.isbn_13: bad check digit")
    status = mapped.grpc_status()
    details = details_of(status.code, status.details, status.trailing_metadata)
    assert details.error_info is not None
    assert details.error_info.domain == ERROR_DOMAIN
    assert details.error_info.reason == "INVALID_FIELD"
    assert details.error_info.metadata["field"] == "book.isbn_13"
    assert details.bad_request is not None
    [violation] = details.bad_request.field_violations
    assert (violation.field, violation.description) == ("book.isbn_13", "bad check digit")


_pg = asyncpg.exceptions
# (exception class, what PostgreSQL says) by the status they must map to.
POSTGRES_ERRORS: dict[tuple[Code, str], list[tuple[type[asyncpg.PostgresError], str]]] = {
    # Failover, restart, a demoted primary, connection limits, lost connections.
    (Code.UNAVAILABLE, "STORE_UNAVAILABLE"): [
        (_pg.AdminShutdownError, "terminating connection due to administrator command"),
        (_pg.CrashShutdownError, "terminating connection because of crash of another process"),
        (_pg.CannotConnectNowError, "the database system is starting up"),
        (_pg.TooManyConnectionsError, "sorry, too many clients already"),
        (_pg.ReadOnlySQLTransactionError, "cannot execute UPDATE in a read-only transaction"),
        (_pg.ConnectionDoesNotExistError, "connection was closed in the middle of operation"),
        (_pg.ConnectionFailureError, "connection failure"),
        (_pg.ClientCannotConnectError, "could not connect"),
    ],
    # Contention: the transaction was rolled back.
    (Code.ABORTED, "TRANSACTION_CONFLICT"): [
        (_pg.DeadlockDetectedError, "deadlock detected"),
        (_pg.SerializationError, "could not serialize access due to concurrent update"),
        (_pg.LockNotAvailableError, "could not obtain lock on row in relation books"),
    ],
    (Code.DEADLINE_EXCEEDED, "STORE_TIMEOUT"): [
        (_pg.QueryCanceledError, "canceling statement due to statement timeout"),
    ],
    # A stored number would overflow (e.g. stock past 2^31-1).
    (Code.FAILED_PRECONDITION, "VALUE_OUT_OF_RANGE"): [
        (_pg.NumericValueOutOfRangeError, "integer out of range"),
    ],
    # Values the store refuses: the request was wrong.
    (Code.INVALID_ARGUMENT, "VALUE_REJECTED_BY_STORE"): [
        (_pg.CharacterNotInRepertoireError, 'invalid byte sequence for encoding "UTF8": 0x00'),
        (_pg.StringDataRightTruncationError, "value too long for type character varying(10)"),
        (_pg.InvalidTextRepresentationError, 'invalid input syntax for type integer: "x"'),
        (_pg.DataError, "data exception"),
    ],
}


@pytest.mark.parametrize(
    ("error_class", "text", "code", "reason"),
    [
        (error_class, text, code, reason)
        for (code, reason), errors in POSTGRES_ERRORS.items()
        for error_class, text in errors
    ],
)
def test_postgres_errors(
    error_class: type[asyncpg.PostgresError], text: str, code: Code, reason: str
) -> None:
    error = error_class(text)
    mapped = status_for(error)
    assert mapped is not None, f"{error!r} left for INTERNAL"
    assert (mapped.code, mapped.reason) == (code, reason)
    assert mapped.metadata["sqlstate"] == error.sqlstate
    assert text in mapped.message
    assert error_class.__name__ not in mapped.message
    if code == Code.INVALID_ARGUMENT:
        assert mapped.message.startswith("request: ")
        assert [f for f, _ in mapped.field_violations] == ["request"]


def test_only_deadlocks_and_serialization_failures_are_retried() -> None:
    assert is_transaction_conflict(asyncpg.exceptions.DeadlockDetectedError("deadlock"))
    assert is_transaction_conflict(asyncpg.exceptions.SerializationError("serialize"))
    assert not is_transaction_conflict(asyncpg.exceptions.LockNotAvailableError("lock"))
    assert not is_transaction_conflict(asyncpg.exceptions.QueryCanceledError("timeout"))
    assert not is_transaction_conflict(ValueError("deadlock"))


@pytest.mark.parametrize(
    "error_class",
    # asyncpg 0.32 raises the first (a PostgresError of SQLSTATE 22000) from its encoders;
    # the second is the client-side class of the same name.
    [asyncpg.exceptions.DataError, asyncpg.exceptions._base.DataError],
)
def test_an_argument_asyncpg_cannot_encode_is_invalid_argument(error_class: type) -> None:
    error = error_class(
        "invalid input for query argument $1: [2147483648] (value out of int32 range)"
    )
    mapped = status_for(error)
    assert mapped is not None and mapped.code == Code.INVALID_ARGUMENT
    assert "value out of int32 range" in mapped.message


def test_a_malformed_query_is_a_bug_not_an_outage() -> None:
    wrong_arguments = asyncpg.exceptions.InterfaceError(
        "the server expects 3 arguments for this query, 4 were passed"
    )
    assert status_for(wrong_arguments) is None
    assert not is_unavailable(wrong_arguments)
    assert status_for(asyncpg.exceptions.UndefinedColumnError('column "x" does not exist')) is None
    busy = asyncpg.exceptions.InterfaceError(
        "cannot perform operation: another operation is in progress"
    )
    assert status_for(busy) is None


@pytest.mark.parametrize(
    "message",
    [
        "cannot perform operation: connection is closed",
        "connection is closed",
        "pool is closing",
        "cannot call Connection.fetch(): the underlying connection is closed",
    ],
)
def test_a_closed_connection_is_an_outage(message: str) -> None:
    mapped = status_for(asyncpg.exceptions.InterfaceError(message))
    assert mapped is not None and mapped.code == Code.UNAVAILABLE


def test_a_command_timeout_is_deadline_exceeded() -> None:
    # asyncpg's command_timeout raises asyncio.TimeoutError (the builtin since 3.11).
    mapped = status_for(TimeoutError())
    assert mapped is not None
    assert (mapped.code, mapped.reason) == (Code.DEADLINE_EXCEEDED, "STORE_TIMEOUT")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        TimeoutError(errno.ETIMEDOUT, "Connection timed out"),
        OSError(errno.ECONNRESET, "Connection reset by peer"),
        redis.exceptions.ConnectionError("gone"),
        redis.exceptions.TimeoutError("slow"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        ReadTimeoutError(endpoint_url="http://dynamodb"),
        ConnectTimeoutError(endpoint_url="http://dynamodb"),
        EndpointConnectionError(endpoint_url="http://dynamodb"),
        ConnectionClosedError(endpoint_url="http://dynamodb"),
    ],
)
def test_store_and_network_outages_are_unavailable(error: Exception) -> None:
    mapped = status_for(error)
    assert mapped is not None
    assert (mapped.code, mapped.reason) == (Code.UNAVAILABLE, "STORE_UNAVAILABLE")
    assert is_unavailable(error)
    assert type(error).__name__ not in mapped.message


def _client_error(code: str, http_status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "..."},
            "ResponseMetadata": {"HTTPStatusCode": http_status},
        },
        "PutItem",
    )


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "TooManyRequests",
        "SlowDown",
    ],
)
def test_aws_throttling_is_resource_exhausted(code: str) -> None:
    mapped = status_for(_client_error(code, 400))
    assert mapped is not None
    assert (mapped.code, mapped.reason) == (Code.RESOURCE_EXHAUSTED, "STORE_THROTTLED")
    assert mapped.metadata["aws_error_code"] == code
    assert "PutItem" in mapped.message


def test_aws_answers_by_http_status() -> None:
    too_many = status_for(_client_error("SomethingNew", 429))
    assert too_many is not None and too_many.code == Code.RESOURCE_EXHAUSTED
    server_side = status_for(_client_error("ServiceUnavailable", 503))
    assert server_side is not None and server_side.code == Code.UNAVAILABLE
    # A request our code built wrongly is our bug.
    assert status_for(_client_error("ValidationException", 400)) is None
    assert status_for(_client_error("ConditionalCheckFailedException", 400)) is None


def test_an_rpc_not_built_yet_is_unimplemented() -> None:
    mapped = status_for(NotImplementedError("Method not implemented!"), "/pkg.v1.Svc/DoIt")
    assert mapped is not None
    assert mapped.code == Code.UNIMPLEMENTED
    assert mapped.message == "pkg.v1.Svc/DoIt is not implemented yet"
    assert mapped.reason == "NOT_IMPLEMENTED"


def test_unexpected_errors_are_left_for_internal() -> None:
    assert status_for(KeyError("x")) is None
    assert status_for(ValueError("x")) is None
    assert status_for(RecursionError()) is None


def test_local_os_errors_are_not_outages() -> None:
    assert status_for(FileNotFoundError(2, "no such file")) is None
    mapped = status_for(OSError(104, "Connection reset by peer"))
    assert mapped is not None and mapped.code == Code.UNAVAILABLE
