"""Distributed tracing with OpenTelemetry: one trace follows a request across gRPC calls
and Kafka records (W3C ``traceparent`` in gRPC metadata and in Kafka headers).

Exporting is off unless configured the standard OpenTelemetry way, by
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) naming an
OTLP/gRPC collector. Off, the OpenTelemetry API stays a no-op that still carries an
incoming trace context through to what a service calls or publishes, so a trace started
by a traced client is not broken by an untraced hop.

Health checks and reflection are not traced: probes every few seconds would bury the
requests that matter.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from services.common.auth import PUBLIC_GRPC_PREFIXES
from services.common.grpc_handlers import rewrap_handler
from services.common.logging import get_logger

log = get_logger(__name__)

TRACER_NAME = "mlops"
MAX_LINKS = 128
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
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
    one record, linked to each record's trace otherwise (OpenTelemetry's batch rule)."""
    contexts = [context_from_headers(h) for h in headers_of_records]
    span_contexts = [trace.get_current_span(c).get_span_context() for c in contexts]
    valid = [sc for sc in span_contexts if sc.is_valid]
    parent = contexts[0] if len(contexts) == 1 and valid else None
    links = [Link(sc) for sc in valid[:MAX_LINKS]] if parent is None else []
    with tracer().start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(headers_of_records),
        },
    ) as span:
        yield span


# -- gRPC ------------------------------------------------------------------------------------


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per call, child of the caller's trace from the ``traceparent`` metadata."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_GRPC_PREFIXES):
            return handler
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        parent = propagate.extract(metadata)
        service, _, name = method.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        return _wrap(handler, method.lstrip("/"), parent, attributes)


def _wrap(
    handler: grpc.RpcMethodHandler, span_name: str, parent: context.Context, attributes: Mapping[str, str]
) -> grpc.RpcMethodHandler:
    def traced(behaviour: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
        if streaming:

            async def traced_stream(request: Any, servicer_context: grpc.aio.ServicerContext) -> Any:
                with tracer().start_as_current_span(
                    span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes
                ) as span:
                    failed = True
                    try:
                        async for item in behaviour(request, servicer_context):
                            yield item
                        failed = False
                    finally:
                        _record_code(span, servicer_context, failed)

            return traced_stream

        async def traced_unary(request: Any, servicer_context: grpc.aio.ServicerContext) -> Any:
            with tracer().start_as_current_span(
                span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            ) as span:
                failed = True
                try:
                    response = await behaviour(request, servicer_context)
                    failed = False
                finally:
                    _record_code(span, servicer_context, failed)
                return response

        return traced_unary

    return rewrap_handler(handler, traced)


def _record_code(span: trace.Span, servicer_context: grpc.aio.ServicerContext, failed: bool) -> None:
    """The call's status code on its span; a server-side failure marks the span as an error
    (a client's mistake, such as INVALID_ARGUMENT or NOT_FOUND, does not)."""
    code = servicer_context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))


def grpc_trace_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC call metadata, for clients to add to each call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


class _ClientMetadata:
    """Adds the current trace context to every outgoing call's metadata."""

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        extra = grpc_trace_metadata()
        if not extra:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_ClientMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_ClientMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_ClientMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_ClientMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio`` channels that propagate the trace to the server."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]
