"""Domain errors, and the one mapping from any exception to the status a caller gets.

Handlers raise DomainErrors; the runtime's interceptor turns every exception into a
status with a human message plus structured details (google.rpc.ErrorInfo with a reason,
and BadRequest field violations for INVALID_ARGUMENT). The mapping never blames the
caller for an outage nor calls a caller's mistake INTERNAL:

- the caller's mistake (what validation missed and a store refused) -> INVALID_ARGUMENT;
- a number that would leave its stored range -> FAILED_PRECONDITION;
- a store that cannot be reached, is failing over, read-only or out of connections,
  and AWS timeouts -> UNAVAILABLE (retry later);
- a deadlock or serialization failure -> ABORTED (the interceptor retries those once);
- a statement timeout -> DEADLINE_EXCEEDED; AWS throttling -> RESOURCE_EXHAUSTED;
- an RPC whose servicer is not written yet -> UNIMPLEMENTED;
- anything else is a bug: INTERNAL, with the trace id to look up in the logs.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
import grpc
import redis.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# ErrorInfo.domain of every error CloudShelf services raise.
ERROR_DOMAIN = "cloudshelf.dev"


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # ErrorInfo.reason: a stable UPPER_SNAKE name of the cause that clients can branch on.
    reason: str = "UNKNOWN"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or type(self).reason
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_FIELD"

    def __init__(self, field: str, problem: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", reason=reason, metadata={"field": field})
        self.field = field
        self.problem = problem


class InvalidArguments(InvalidArgument):
    """Several fields refused at once (an all-or-nothing batch): one BadRequest violation
    each; the message names the first."""

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        field, problem = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(field, problem + more)
        self.problem = problem
        self.violations = tuple(violations)


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrent write won; the caller should re-read and retry."""

    code = grpc.StatusCode.ABORTED
    reason = "CONCURRENT_CHANGE"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


@dataclass(frozen=True)
class ErrorStatus:
    """What a failed call answers: code, message and the details beside the message."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # (field path, what is wrong with it), sent as google.rpc.BadRequest.
    field_violations: tuple[tuple[str, str], ...] = ()
    # A peer's own details, passed on unchanged instead of ours.
    peer_details: tuple[any_pb2.Any, ...] = ()

    def rpc_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.peer_details:
            status.details.extend(self.peer_details)
            return status
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=dict(self.metadata)
            )
        )
        if self.field_violations:
            status.details.add().Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.field_violations
                    ]
                )
            )
        return status

    def grpc_status(self) -> grpc.Status:
        """For context.abort_with_status: the code, message and details as trailers."""
        status: grpc.Status = rpc_status.to_status(self.rpc_status())
        return status


# --- the mapping -----------------------------------------------------------------------

STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
STORE_TIMEOUT = "STORE_TIMEOUT"
STORE_THROTTLED = "STORE_THROTTLED"
TRANSACTION_CONFLICT = "TRANSACTION_CONFLICT"
VALUE_OUT_OF_RANGE = "VALUE_OUT_OF_RANGE"
VALUE_REJECTED_BY_STORE = "VALUE_REJECTED_BY_STORE"
NOT_IMPLEMENTED = "NOT_IMPLEMENTED"

# PostgreSQL SQLSTATEs (and classes, two characters) that mean "the database cannot serve
# now", not "the request was wrong": connection exceptions (08), insufficient resources
# (53, e.g. 53300 too many connections), admin/crash shutdown and "cannot connect now"
# (57P01-03: a failover or restart), a read-only transaction (25006: connected to a
# demoted primary).
_PG_UNAVAILABLE = frozenset({"08", "53", "57P01", "57P02", "57P03", "25006"})
# Deadlock and serialization failure: the transaction was rolled back, a retry may pass.
_PG_CONFLICT = frozenset({"40001", "40P01"})
# lock_timeout: another transaction holds the row; contention, like a conflict.
_PG_LOCK_NOT_AVAILABLE = "55P03"
_PG_QUERY_CANCELED = "57014"  # statement_timeout or a cancel request
_PG_NUMERIC_OUT_OF_RANGE = "22003"
_PG_DATA_EXCEPTION_CLASS = "22"  # the store refused a value: NUL in text, too long, ...

# asyncpg raises a bare InterfaceError for a few connection states; its other
# InterfaceErrors (wrong argument count, an operation in progress) are bugs.
_PG_CLOSED_MESSAGES = ("connection is closed", "pool is closing", "pool is closed")

# AWS error codes of throttling, as botocore's standard retry mode lists them, plus the
# spellings some services use.
AWS_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "TooManyRequests",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)
# Transient AWS answers: retrying later succeeds.
_AWS_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)

# Exceptions that mean "a store or peer could not be reached", not "the request was wrong".
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.exceptions.PostgresConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    BotoConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ...
)

# Socket failures that surface as a bare OSError rather than a ConnectionError.
_NETWORK_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means a store or peer is down or unreachable (retry later)."""
    mapped = status_for(exc)
    return mapped is not None and mapped.reason == STORE_UNAVAILABLE


def is_transaction_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: PostgreSQL rolled the transaction back."""
    return isinstance(exc, asyncpg.PostgresError) and _sqlstate(exc) in _PG_CONFLICT


def status_for(exc: BaseException, method: str = "") -> ErrorStatus | None:
    """The status to answer with, or None when the error is unexpected (INTERNAL).
    `method` is the full RPC name ("/pkg.Service/Method"), used in messages."""
    if isinstance(exc, DomainError):
        violations: tuple[tuple[str, str], ...] = (
            ((exc.field, exc.problem),) if isinstance(exc, InvalidArgument) else ()
        )
        if isinstance(exc, InvalidArguments):
            violations = exc.violations
        return ErrorStatus(exc.code, exc.message, exc.reason, exc.metadata, violations)
    if isinstance(exc, grpc.aio.AioRpcError):
        return _peer(exc)
    if isinstance(exc, NotImplementedError):
        # The generated servicer base raises it for every RPC not written yet.
        name = method.lstrip("/") or "this method"
        return ErrorStatus(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{name} is not implemented yet",
            NOT_IMPLEMENTED,
            {"method": name} if method else {},
        )
    if isinstance(exc, asyncpg.PostgresError):
        return _postgres(exc)
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        return _postgres_client(exc)
    if isinstance(exc, ClientError):
        return _aws(exc)
    if isinstance(exc, TimeoutError) and exc.errno is None:
        # asyncpg's command_timeout (and other asyncio timeouts): the work took too long;
        # the same request would take too long again.
        return ErrorStatus(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "a backing store did not answer in time; narrow the request or retry later",
            STORE_TIMEOUT,
        )
    if isinstance(exc, _UNAVAILABLE_ERRORS) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS
    ):
        return _unavailable(_store_of(exc), _describe(exc))
    return None


def _sqlstate(exc: asyncpg.PostgresError) -> str:
    return str(getattr(exc, "sqlstate", "") or "")


def _postgres(exc: asyncpg.PostgresError) -> ErrorStatus | None:
    state = _sqlstate(exc)
    text = _describe(exc)
    details = {"store": "postgres", "sqlstate": state}
    if state in _PG_UNAVAILABLE or state[:2] in _PG_UNAVAILABLE:
        return _unavailable("postgres", text, details)
    if state in _PG_CONFLICT or state == _PG_LOCK_NOT_AVAILABLE:
        return ErrorStatus(
            grpc.StatusCode.ABORTED,
            f"the request conflicted with a concurrent one ({text}); retry it",
            TRANSACTION_CONFLICT,
            details,
        )
    if state == _PG_QUERY_CANCELED:
        return ErrorStatus(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the database did not finish in time ({text}); narrow the request or retry later",
            STORE_TIMEOUT,
            details,
        )
    if state == _PG_NUMERIC_OUT_OF_RANGE:
        return ErrorStatus(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the change would take a stored number past its limit ({text}); make a smaller change",
            VALUE_OUT_OF_RANGE,
            details,
        )
    if state.startswith(_PG_DATA_EXCEPTION_CLASS):
        return _rejected_value(text, details)
    return None


def _postgres_client(exc: asyncpg.exceptions.InterfaceError) -> ErrorStatus | None:
    if isinstance(exc, asyncpg.exceptions._base.DataError):
        # An argument asyncpg could not encode, e.g. an int64 bound to an integer column.
        return _rejected_value(_describe(exc), {"store": "postgres"})
    if any(closed in str(exc) for closed in _PG_CLOSED_MESSAGES):
        return _unavailable("postgres", _describe(exc))
    return None  # a malformed query: a bug, not an outage


def _rejected_value(text: str, details: dict[str, str]) -> ErrorStatus:
    problem = f"a value is not accepted by the store ({text})"
    return ErrorStatus(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request: {problem}",
        VALUE_REJECTED_BY_STORE,
        details,
        (("request", problem),),
    )


def _aws(exc: ClientError) -> ErrorStatus | None:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    operation = getattr(exc, "operation_name", "") or "a call"
    details = {"store": "aws", "aws_error_code": code, "operation": operation}
    if code in AWS_THROTTLING_CODES or http_status == 429:
        return ErrorStatus(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"AWS is throttling {operation} ({code or http_status}); retry with backoff",
            STORE_THROTTLED,
            details,
        )
    if code in _AWS_TRANSIENT_CODES or http_status >= 500:
        return _unavailable("aws", f"{operation}: {code or http_status}", details)
    return None


def _unavailable(store: str, text: str, details: Mapping[str, str] | None = None) -> ErrorStatus:
    return ErrorStatus(
        grpc.StatusCode.UNAVAILABLE,
        f"a backing store is unavailable ({text}); retry later",
        STORE_UNAVAILABLE,
        details if details is not None else {"store": store},
    )


def _store_of(exc: BaseException) -> str:
    module = type(exc).__module__
    for prefix, store in (("asyncpg", "postgres"), ("redis", "redis"), ("botocore", "aws")):
        if module.startswith(prefix):
            return store
    return "network"


def _describe(exc: BaseException) -> str:
    """The exception's own first line, never its Python class name."""
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return "AWS did not answer in time"
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no details"


def _peer(exc: grpc.aio.AioRpcError) -> ErrorStatus:
    """A peer's answer: keep its code, message and details (e.g. NOT_FOUND from the
    catalog), so the caller sees what the peer said."""
    code = exc.code()
    message = exc.details() or code.name
    details: tuple[any_pb2.Any, ...] = ()
    for key, value in exc.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                details = tuple(status_pb2.Status.FromString(value).details)
            except DecodeError:
                details = ()
    return ErrorStatus(code, message, "PEER_ERROR", {"peer_code": code.name}, peer_details=details)


# Where grpc-status puts the serialized google.rpc.Status.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
