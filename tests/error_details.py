"""Reading the structured details (google.rpc.Status) a failed call carries."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class Details:
    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None

    @property
    def fields(self) -> list[str]:
        return [v.field for v in self.bad_request.field_violations] if self.bad_request else []


def details_of(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Sequence[tuple[str, str | bytes]] | None,
) -> Details:
    """The ErrorInfo and BadRequest of a status; asserts the rich status agrees with the
    plain code and message, as grpc-status requires."""
    error_info = bad_request = None
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY:
            continue
        assert isinstance(value, bytes)
        status = status_pb2.Status.FromString(value)
        assert status.code == code.value[0], f"{status.code} in details, {code} on the call"
        assert status.message == message
        for detail in status.details:
            if detail.TypeName() == error_details_pb2.ErrorInfo.DESCRIPTOR.full_name:
                error_info = error_details_pb2.ErrorInfo()
                detail.Unpack(error_info)
            elif detail.TypeName() == error_details_pb2.BadRequest.DESCRIPTOR.full_name:
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
    return Details(code, message, error_info, bad_request)


def details_of_error(exc: grpc.aio.AioRpcError) -> Details:
    metadata = [(str(key), value) for key, value in exc.trailing_metadata() or ()]
    return details_of(exc.code(), exc.details() or "", metadata)


def raw_call(channel: grpc.aio.Channel, method: str, request: bytes) -> Awaitable[bytes]:
    """A call with request bytes as given (e.g. not valid protobuf), answer undecoded."""
    multicallable: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    return multicallable(request)
