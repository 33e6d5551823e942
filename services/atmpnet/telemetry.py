"""OpenTelemetry setup and W3C trace context carried in Kafka headers.

A trace starts where a site publishes an event and continues through processing and the
warehouse write: the publisher injects ``traceparent`` (and ``tracestate``) into the record's
headers; processors extract it and open their spans as children of it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from atmpnet.settings import Settings

# Kafka headers as confluent-kafka and aiokafka give them: (name, value) pairs
KafkaHeaders = Sequence[tuple[str, bytes | str | None]]

_PROPAGATOR = TraceContextTextMapPropagator()
_setup_lock = threading.Lock()
_configured = False


class _HeaderSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode("ascii")))


class _HeaderGetter(Getter[KafkaHeaders]):
    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        found = [v.decode("ascii", "replace") if isinstance(v, bytes) else v for k, v in carrier if k == key]
        values = [v for v in found if v is not None]
        return values or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [k for k, _ in carrier]


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def configure(
    service_name: str,
    *,
    span_exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    metric_readers: Iterable[MetricReader] = (),
) -> None:
    """Install the global tracer and meter providers once per process.

    With no exporter, spans are still made (and propagated) but go nowhere; tests pass an
    ``InMemorySpanExporter`` through ``span_processor=SimpleSpanProcessor(...)``.
    """
    global _configured  # noqa: PLW0603 - OpenTelemetry's providers are process-global by design
    with _setup_lock:
        if _configured:
            return
        resource = Resource.create({"service.name": service_name})
        provider = TracerProvider(resource=resource)
        if span_processor is not None:
            provider.add_span_processor(span_processor)
        if span_exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=list(metric_readers)))
        propagate.set_global_textmap(_PROPAGATOR)
        _configured = True


def configure_from_settings(settings: Settings, service_name: str) -> None:
    """Install providers as settings say: OTLP/HTTP to a collector, stderr, or in-process only.

    Spans are always made and their context always travels in Kafka headers, so a trace
    continues across processes even when this process exports nothing.
    """
    exporters: list[SpanExporter] = []
    readers: list[MetricReader] = []
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        base = settings.otel_exporter_otlp_endpoint.rstrip("/")
        exporters.append(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics")))
    if settings.otel_console:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(ConsoleSpanExporter())
    processor = None
    if len(exporters) > 1:
        processor = BatchSpanProcessor(exporters[1])
    configure(
        service_name,
        span_exporter=exporters[0] if exporters else None,
        span_processor=processor,
        metric_readers=readers,
    )


def shutdown() -> None:
    """Flush and stop the configured span and metric providers (before a hard process exit)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        stop = getattr(provider, "shutdown", None)
        if callable(stop):
            stop()


def tracer(name: str) -> trace.Tracer:
    """The tracer for an atmpnet module (a no-op one until ``configure`` is called)."""
    return trace.get_tracer(name)


def meter(name: str) -> metrics.Meter:
    """The meter for an atmpnet module (a no-op one until ``configure`` is called)."""
    return metrics.get_meter(name)


def inject_headers(
    headers: list[tuple[str, bytes]] | None = None, context: Context | None = None
) -> list[tuple[str, bytes]]:
    """Append W3C ``traceparent``/``tracestate`` of the current (or given) context to Kafka headers."""
    carrier = headers if headers is not None else []
    _PROPAGATOR.inject(carrier, context=context, setter=_SETTER)
    return carrier


def extract_context(headers: KafkaHeaders | None) -> Context:
    """The trace context carried in a record's Kafka headers (empty when there is none)."""
    return _PROPAGATOR.extract(headers or [], getter=_GETTER)


def traceparent(headers: KafkaHeaders | None) -> str | None:
    """The raw ``traceparent`` header value, for storing beside an event."""
    values = _GETTER.get(headers or [], "traceparent")
    return values[0] if values else None


def span_attributes(**attributes: Any) -> dict[str, Any]:
    """Drop None values: OpenTelemetry refuses them as attribute values."""
    return {k: v for k, v in attributes.items() if v is not None}
