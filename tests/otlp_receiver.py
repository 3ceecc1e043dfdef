"""A real OTLP/gRPC receiver of traces and metrics for tests: services export to it like
to a collector."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1.metrics_pb2 import NumberDataPoint


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
    # Trace ids of the spans this one links to.
    linked_trace_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReceivedGauge:
    service_name: str
    name: str
    value: float
    attributes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ReceivedSum:
    """One data point of a counter (cumulative: the total since the process started)."""

    service_name: str
    name: str
    value: float
    attributes: tuple[tuple[str, str], ...]
    # When the exporting process took the point (unix ns).
    time_unix_nano: int


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.gauges: list[ReceivedGauge] = []
        self.sums: list[ReceivedSum] = []
        self.lock = threading.Lock()

    def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        received = []
        sums = []
        for resource_metrics in request.resource_metrics:
            resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
            service = resource.get("service.name", "")
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.gauge.data_points:
                        received.append(
                            ReceivedGauge(service, metric.name, _value(point), _attributes(point))
                        )
                    for point in metric.sum.data_points:
                        sums.append(
                            ReceivedSum(
                                service,
                                metric.name,
                                _value(point),
                                _attributes(point),
                                point.time_unix_nano,
                            )
                        )
        with self.lock:
            self.gauges.extend(received)
            self.sums.extend(sums)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _value(point: NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


def _attributes(point: NumberDataPoint) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((a.key, a.value.string_value) for a in point.attributes))


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._exported: list[bytes] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self._metrics = _MetricsService()
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self._metrics, self._server)
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
                            linked_trace_ids=tuple(link.trace_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self._spans.extend(received)
            self._exported.append(request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()

    def exported_bytes(self) -> bytes:
        """Every trace export received so far, as sent: every attribute, event and
        resource of every span, for tests that search them for what must not be there."""
        with self._lock:
            return b"".join(self._exported)

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

    def spans_linked_to(self, trace_id: str) -> list[ReceivedSpan]:
        """Spans of other traces that link to `trace_id` (e.g. an outbox relay round)."""
        with self._lock:
            return [s for s in self._spans if trace_id in s.linked_trace_ids]

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def gauges(self, name: str) -> list[ReceivedGauge]:
        """Every data point received for the gauge `name`, oldest first."""
        with self._metrics.lock:
            return [g for g in self._metrics.gauges if g.name == name]

    def sums(self, name: str) -> list[ReceivedSum]:
        """Every data point received for the counter `name`, oldest first."""
        with self._metrics.lock:
            return [s for s in self._metrics.sums if s.name == name]
