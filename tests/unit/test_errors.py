from __future__ import annotations

import asyncpg
import grpc
import pytest
import redis.exceptions

from cloudshelf.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    status_for,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("book.price", "must be >= 0"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("book 7 not found"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("review exists"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("stock"), grpc.StatusCode.FAILED_PRECONDITION),
        (Aborted("version moved"), grpc.StatusCode.ABORTED),
        (Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
        (PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_domain_errors_map_to_their_status(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for(error) == (code, str(error))


def test_invalid_argument_names_the_field() -> None:
    assert status_for(InvalidArgument("book.isbn_13", "bad check digit")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "book.isbn_13: bad check digit",
    )


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        redis.exceptions.ConnectionError("gone"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        TimeoutError(),
    ],
)
def test_store_outages_are_unavailable(error: Exception) -> None:
    mapped = status_for(error)
    assert mapped is not None and mapped[0] == grpc.StatusCode.UNAVAILABLE


def test_unexpected_errors_are_left_for_internal() -> None:
    assert status_for(KeyError("x")) is None
    assert status_for(ValueError("x")) is None


def test_local_os_errors_are_not_outages() -> None:
    assert status_for(FileNotFoundError(2, "no such file")) is None
    mapped = status_for(OSError(104, "Connection reset by peer"))
    assert mapped is not None and mapped[0] == grpc.StatusCode.UNAVAILABLE
