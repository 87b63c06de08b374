"""Spans recorded in memory by the OpenTelemetry SDK, as an OTLP exporter would receive them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

EXPORTER = InMemorySpanExporter()


class _WhileRecording(SimpleSpanProcessor):
    """Exports only while a test records: spans of the rest of the session are not kept."""

    on = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            super().on_end(span)


_processor: _WhileRecording | None = None


@contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """Every span finished inside the block, in :data:`EXPORTER` (emptied on the way in and
    out). The SDK goes behind the global API as ``configure_tracing`` installs it when
    exporting; the global provider can be set once per process, so suites share it."""
    global _processor
    if _processor is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        _processor = _WhileRecording(EXPORTER)
        provider.add_span_processor(_processor)
    EXPORTER.clear()
    _processor.on = True
    try:
        yield EXPORTER
    finally:
        _processor.on = False
        EXPORTER.clear()


def finished(kind: SpanKind | None = None) -> list[ReadableSpan]:
    """The spans finished so far while recording, of one kind."""
    return [s for s in EXPORTER.get_finished_spans() if kind is None or s.kind == kind]
