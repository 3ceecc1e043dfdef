"""gRPC plumbing shared by servers and clients: error mapping, deadline propagation, channels."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from cloudshelf.runtime.errors import status_for
from cloudshelf.runtime.telemetry import NOT_HEALTH_CHECK

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


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else "-"


class ServerErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes and records each call's deadline for outgoing calls."""

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
            remaining = context.time_remaining()
            _incoming_deadline.set(None if remaining is None else time.monotonic() + remaining)
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                mapped = status_for(exc)
                if mapped is None:
                    log.exception("unhandled error in %s", method)
                    await context.abort(
                        grpc.StatusCode.INTERNAL, f"internal error (trace id {_trace_id()})"
                    )
                code, message = mapped
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    log.warning("%s failed: %s", method, message, extra={"code": code.name})
                await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
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


def peer_channel(address: str, default_timeout: float) -> grpc.aio.Channel:
    """A channel to another CloudShelf service: traced (W3C context in metadata, health
    checks excepted) and with deadlines propagated."""
    interceptors: list[Any] = [
        *aio_client_interceptors(filter_=NOT_HEALTH_CHECK),
        DeadlinePropagation(default_timeout),
    ]
    return grpc.aio.insecure_channel(address, interceptors=interceptors)
