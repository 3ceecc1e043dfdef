"""Domain errors and their gRPC status codes.

Handlers raise these; the runtime's interceptor turns them into a status with the message
as its details. Failures of a backing store become UNAVAILABLE (the caller may retry);
anything else becomes INTERNAL with the trace id to look up in the logs.
"""

from __future__ import annotations

import asyncio
import errno

import asyncpg
import grpc
import redis.exceptions
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent write won; the caller should re-read and retry."""

    code = grpc.StatusCode.ABORTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


# Exceptions that mean "a store or peer could not be reached", not "the request was wrong".
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    EndpointConnectionError,
    ConnectionClosedError,
)


# Socket failures that surface as a bare OSError rather than a ConnectionError.
_NETWORK_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}
)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _UNAVAILABLE_ERRORS) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
    )


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status to answer with, or None when the error is unexpected (INTERNAL)."""
    if isinstance(exc, DomainError):
        return exc.code, exc.message
    if isinstance(exc, grpc.aio.AioRpcError):
        # A peer's answer: keep its code so the caller sees e.g. NOT_FOUND from the catalog.
        return exc.code(), exc.details() or exc.code().name
    if is_unavailable(exc):
        name = type(exc).__name__
        return grpc.StatusCode.UNAVAILABLE, f"a backing store is unavailable ({name}); retry later"
    return None
