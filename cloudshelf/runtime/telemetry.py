"""OpenTelemetry, set up once per process.

Spans (and metrics, e.g. the outbox backlog gauge) are exported over OTLP only when
OTEL_EXPORTER_OTLP_ENDPOINT (or the signal-specific variable) is set; the exporters read the
other standard OTEL_* variables themselves. The W3C trace-context propagator is the SDK
default, so every instrumented client call carries `traceparent`.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import filters
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None

# Health checks run every few seconds from kubelets and our own monitors: keep them out.
NOT_HEALTH_CHECK = filters.negate(filters.health_check())


# The gRPC server instrumentation records the caller's address: personal data when the
# caller is a shopper's device (issue 16: no PII in telemetry). Client metadata that a
# service needs is read from the transport or trusted gateway headers, not from spans.
_CLIENT_ADDRESS_ATTRIBUTES = ("net.peer.ip", "net.peer.port", "client.address", "client.port")


class _WithoutClientAddress(SpanProcessor):
    """Overwrites the caller's address on server spans as they start, before any export."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        for name in _CLIENT_ADDRESS_ATTRIBUTES:
            if name in attributes:
                span.set_attribute(name, "redacted")


def otlp_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def otlp_metrics_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )


def configure_telemetry(service: str) -> TracerProvider:
    """Installs the global tracer and meter providers (idempotent) and the store
    instrumentations."""
    global _provider, _meter_provider
    if _provider is not None:
        return _provider
    # OTEL_SERVICE_NAME (set per pod by the chart) wins over the code's name.
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(_WithoutClientAddress())
    if otlp_configured():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    if otlp_metrics_configured():
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        _meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
        )
        metrics.set_meter_provider(_meter_provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    return provider


def shutdown_telemetry() -> None:
    """Flushes buffered spans; called once the server has drained."""
    if _provider is not None:
        _provider.shutdown()
    if _meter_provider is not None:
        _meter_provider.shutdown()
