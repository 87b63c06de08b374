"""Distributed tracing with OpenTelemetry: one trace follows a request across gRPC calls
and Kafka records (W3C ``traceparent`` in gRPC metadata and in Kafka headers).

Exporting is off unless configured the standard OpenTelemetry way, by
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) naming an
OTLP/gRPC collector. Off, the OpenTelemetry API stays a no-op that still carries an
incoming trace context through to what a service calls or publishes, so a trace started
by a traced client is not broken by an untraced hop.

gRPC calls (server and client) and HTTP routes get their spans from the OpenTelemetry
instrumentation packages (``opentelemetry-instrumentation-grpc`` and ``-fastapi``). Health
checks, reflection, probes and metric scrapes are not traced: every few seconds they would
bury the requests that matter.

Kafka is traced here, by hand, for three reasons. The trace context travels in the
CloudEvents envelope, written when a message is encoded, so it reaches consumers whichever
client produced it (aiokafka, librdkafka for serving's prediction log, faust for the
monitor). A consumer loop handles a batch, and OpenTelemetry's batch rule (one CONSUMER
span linked to each record's trace, a child of it when the batch is one record) needs the
span around the handler, where ``opentelemetry-instrumentation-aiokafka`` only opens
per-record "receive" spans that close before handling begins. And that package's latest
release (0.66b1) pins ``opentelemetry-semantic-conventions==0.66b1`` where the SDK in use
(1.45.2) needs 0.66b2, so the two cannot be installed together.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import opentelemetry.instrumentation.grpc as grpc_instrumentation
from fastapi import FastAPI
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import SpanKind

from services.common.auth import PUBLIC_GRPC_PREFIXES
from services.common.logging import get_logger

log = get_logger(__name__)

TRACER_NAME = "mlops"
MAX_LINKS = 128
_provider: Any = None


def exporting() -> bool:
    """Whether an OTLP endpoint is configured (and the SDK not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_tracing(service: str, version: str = "dev") -> bool:
    """Export this process's spans over OTLP when an endpoint is configured.

    Returns whether spans are exported. Call once at start-up, before serving.
    """
    global _provider
    if not exporting() or _provider is not None:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": f"mlops-{service}", "service.namespace": "mlops", "service.version": version}
    )
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    log.info("tracing_enabled", exporter="otlp")
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (spans still buffered are sent)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


# -- Kafka headers ---------------------------------------------------------------------------


def trace_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers (none outside a trace)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def context_from_headers(headers: Sequence[tuple[str, bytes | None]]) -> context.Context:
    """The trace context a record's headers carry (empty when they carry none)."""
    carrier = {
        key: (value or b"").decode("latin-1")
        for key, value in headers
        if key in ("traceparent", "tracestate")
    }
    return propagate.extract(carrier)


@contextmanager
def consume_span(
    topic: str, group: str, headers_of_records: Sequence[Sequence[tuple[str, bytes | None]]]
) -> Iterator[trace.Span]:
    """A CONSUMER span for handling a batch: child of the record's trace when the batch is
    one record, linked to each record's trace otherwise (OpenTelemetry's batch rule).

    Links are read from the records only when the span is recorded (an exporter is
    configured): untraced, a batch of hundreds of records costs one no-op span."""
    parent = None
    if len(headers_of_records) == 1:
        carried = context_from_headers(headers_of_records[0])
        if trace.get_current_span(carried).get_span_context().is_valid:
            parent = carried
    with tracer().start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(headers_of_records),
        },
    ) as span:
        if parent is None and len(headers_of_records) > 1 and span.is_recording():
            _link_records(span, headers_of_records)
        yield span


def _link_records(span: trace.Span, headers_of_records: Sequence[Sequence[tuple[str, bytes | None]]]) -> None:
    linked = 0
    for headers in headers_of_records:
        span_context = trace.get_current_span(context_from_headers(headers)).get_span_context()
        if span_context.is_valid:
            span.add_link(span_context)
            linked += 1
            if linked == MAX_LINKS:
                return


# -- gRPC and HTTP: the OpenTelemetry instrumentation packages ------------------------------


def _traced_method(details: Any) -> bool:
    """Whether a call is traced: health checks and reflection are not."""
    method = details.method
    if isinstance(method, bytes):  # grpc.aio client call details carry bytes
        method = method.decode()
    return not str(method).startswith(PUBLIC_GRPC_PREFIXES)


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """A SERVER span per call (named ``/package.Service/Method``), child of the caller's
    trace from the ``traceparent`` metadata; a server-side status (UNKNOWN, INTERNAL,
    UNAVAILABLE ...) marks it as an error, a client's mistake (INVALID_ARGUMENT, NOT_FOUND)
    does not."""
    interceptor: grpc.aio.ServerInterceptor = grpc_instrumentation.aio_server_interceptor(
        filter_=_traced_method
    )
    return interceptor


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio`` channels: a CLIENT span per call, and the trace
    context in its metadata for the server to continue."""
    interceptors: list[grpc.aio.ClientInterceptor] = grpc_instrumentation.aio_client_interceptors(
        filter_=_traced_method
    )
    return list(interceptors)


def instrument_http(app: FastAPI) -> None:
    """A SERVER span per HTTP request, named by its route (``POST /v2/models/{name}/infer``),
    except probes and scrapes; no spans for the ASGI messages inside a request."""
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="/health/live,/health/ready,/metrics", exclude_spans=["receive", "send"]
    )
