"""A real OTLP/gRPC trace receiver for tests: services export to it like to a collector."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service_name: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    # String attributes (e.g. db.statement of a database client span).
    attributes: dict[str, str] = field(default_factory=dict)


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attributes.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service_name=service,
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={
                                a.key: a.value.string_value
                                for a in span.attributes
                                if a.value.HasField("string_value")
                            },
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans_of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]

    def spans_of_service(self, service_name: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.service_name == service_name]

    def wait_for(
        self, trace_id: str, services: set[str], timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The trace's spans once every named service has reported at least one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans_of_trace(trace_id)
            if services <= {s.service_name for s in spans}:
                return spans
            time.sleep(0.1)
        seen = {s.service_name for s in self.spans_of_trace(trace_id)}
        raise AssertionError(f"trace {trace_id}: spans from {seen}, expected {services}")
