"""gRPC plumbing shared by servers and clients: error mapping, deadline propagation, channels."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn, TypeAlias

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from cloudshelf.runtime.auth import CallerCredentials
from cloudshelf.runtime.config import TlsFiles
from cloudshelf.runtime.errors import (
    ErrorStatus,
    InvalidArgument,
    is_transaction_conflict,
    status_for,
)
from cloudshelf.runtime.telemetry import NOT_HEALTH_CHECK
from cloudshelf.runtime.tls import channel_credentials
from cloudshelf.runtime.validation import check_message_text

log = logging.getLogger("cloudshelf.rpc")

# What every handler receives as `context`.
ServicerContext: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

# Monotonic time by which the incoming call must be answered; None when it has no deadline.
_incoming_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "incoming_deadline", default=None
)


def remaining_time() -> float | None:
    """Seconds left on the incoming call's deadline, or None when it has none."""
    deadline = _incoming_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextlib.contextmanager
def beyond_caller_deadline() -> Iterator[None]:
    """Peer calls made inside ignore the incoming call's deadline (each uses its own
    timeout, or the channel's default): for clean-up that must run even after the caller
    gave up, e.g. giving back stock reserved by a checkout that then failed."""
    token = _incoming_deadline.set(None)
    try:
        yield
    finally:
        _incoming_deadline.reset(token)


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else "-"


class _UndecodableRequest:
    """Stands in for a request whose bytes did not parse, so the handler can answer
    INVALID_ARGUMENT (a deserializer that raises makes grpc answer UNKNOWN, naming the
    Python exception class)."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


def _tolerant_deserializer(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    message_class = getattr(deserialize, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    message_type = getattr(descriptor, "full_name", "the request message")

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _UndecodableRequest(message_type)

    return tolerant


def _undecodable(request: _UndecodableRequest) -> ErrorStatus:
    problem = (
        f"the bytes are not a valid {request.message_type} "
        "(malformed encoding, or a string field that is not UTF-8)"
    )
    return ErrorStatus(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request: {problem}",
        "UNDECODABLE_REQUEST",
        {"field": "request"},
        (("request", problem),),
    )


async def _abort(context: ServicerContext, error: ErrorStatus) -> NoReturn:
    # The tracing wrapper of the context records the code from set_code, not from
    # abort_with_status.
    context.set_code(error.code)
    context.set_details(error.message)
    await context.abort_with_status(error.grpc_status())
    raise AssertionError("abort_with_status returned")  # it always raises


class ServerErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps every exception to a status with details, refuses requests that do not decode
    or that carry control characters, retries a handler once after a deadlock or
    serialization failure, and records each call's deadline for outgoing calls.

    The retry is of the whole unary handler. It is safe because PostgreSQL rolls back the
    transaction in which a deadlock (40P01) or serialization failure (40001) happens and
    `conn.transaction()` ends it with the exception, so the failed attempt wrote nothing,
    provided a handler's write transaction is the only one it commits, with nothing after
    it but idempotent steps (cache invalidations, reads). Every catalog handler is built
    that way; a handler that commits twice must not let these errors escape its second
    transaction (catch and map them, e.g. to Aborted) or it could apply the first twice.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        async def unary_unary(request: Any, context: ServicerContext) -> Any:
            if isinstance(request, _UndecodableRequest):
                await _abort(context, _undecodable(request))
            try:
                check_message_text(request)
            except InvalidArgument as exc:
                await _abort(context, _mapped(exc, method))
            remaining = context.time_remaining()
            _incoming_deadline.set(None if remaining is None else time.monotonic() + remaining)
            retried = False
            while True:
                try:
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    if is_transaction_conflict(exc) and not retried and _time_left(context):
                        retried = True
                        log.info("%s: retrying once after %s", method, exc)
                        continue
                    await _abort(context, _mapped(exc, method))

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=_tolerant_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _time_left(context: ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is None or remaining > 0.05


def _mapped(exc: Exception, method: str) -> ErrorStatus:
    mapped = status_for(exc, method)
    if mapped is None:
        log.exception("unhandled error in %s", method, exc_info=exc)
        trace_id = _trace_id()
        return ErrorStatus(
            grpc.StatusCode.INTERNAL,
            f"internal error (trace id {trace_id})",
            "INTERNAL",
            {"trace_id": trace_id},
        )
    if mapped.code in _LOGGED_CODES:
        log.warning("%s failed: %s", method, mapped.message, extra={"code": mapped.code.name})
    return mapped


# Answers an operator should see: the service itself had trouble serving them.
_LOGGED_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class DeadlinePropagation(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Gives every outgoing call the smaller of its own timeout and what is left of the
    incoming call's deadline, or a default when neither is set."""

    def __init__(self, default_timeout: float) -> None:
        self.default_timeout = default_timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        candidates = [t for t in (client_call_details.timeout, remaining_time()) if t is not None]
        timeout = max(min(candidates), 0.0) if candidates else self.default_timeout
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=timeout,
            metadata=client_call_details.metadata,
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


# gRPC's reconnect backoff grows to 120 s by default: after a peer's outage a caller would
# keep failing (or serving snapshots) for up to two minutes once the peer is back.
PEER_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def peer_channel(
    address: str, default_timeout: float, *, tls: TlsFiles | None = None
) -> grpc.aio.Channel:
    """A channel to another CloudShelf service: traced (W3C context in metadata, health
    checks excepted), with deadlines propagated, carrying the caller's token (or the
    service's own outside a call: see auth.CallerCredentials); over TLS with `tls`
    (Settings.peer_tls), presenting its certificate when it has one (mTLS)."""
    interceptors: list[Any] = [
        *aio_client_interceptors(filter_=NOT_HEALTH_CHECK),
        DeadlinePropagation(default_timeout),
        CallerCredentials(),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(
            address, options=PEER_CHANNEL_OPTIONS, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        address, channel_credentials(tls), options=PEER_CHANNEL_OPTIONS, interceptors=interceptors
    )
