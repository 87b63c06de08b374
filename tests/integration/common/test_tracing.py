"""One trace across the platform's hops: a real gRPC server and client on loopback, and
the real broker with the shared consumer loop. Spans are collected in memory by the
OpenTelemetry SDK, as an OTLP exporter would receive them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from services.common import tracing
from services.common.clients.health import health_stub
from services.common.events import IncomingRecord, Topics, encode
from services.common.grpc_handlers import ServicerContext
from services.common.grpc_server import GrpcServer
from services.common.http import HttpServer, create_app
from services.common.kafka import ConsumerLoop, DeadLetter, create_producer, ensure_topics, publish
from services.common.logging import add_trace_ids
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import events_pb2
from tests.conftest import Infra
from tests.helpers.keys import KEYS
from tests.helpers.tracing import finished, recording


@pytest.fixture(autouse=True)
def record() -> Iterator[None]:
    with recording():
        yield


def spans(kind: SpanKind) -> list[ReadableSpan]:
    return finished(kind)


class LiveServicer(oip_grpc.GRPCInferenceServiceServicer):
    """Remembers the trace context its handler ran in."""

    def __init__(self) -> None:
        self.seen: list[trace.SpanContext] = []

    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: ServicerContext
    ) -> oip.ServerLiveResponse:
        self.seen.append(trace.get_current_span().get_span_context())
        return oip.ServerLiveResponse(live=True)


@asynccontextmanager
async def serving(servicer: LiveServicer) -> AsyncIterator[str]:
    """``servicer`` behind the platform's gRPC server on a free loopback port; its address."""
    server = GrpcServer("127.0.0.1:0")
    server.add_service(
        oip_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, "inference.GRPCInferenceService"
    )
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


async def test_a_grpc_call_continues_the_callers_trace_but_health_checks_are_not_traced() -> None:
    servicer = LiveServicer()  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    async with (
        serving(servicer) as address,
        grpc.aio.insecure_channel(address, interceptors=tracing.client_interceptors()) as channel,
    ):
        with tracing.tracer().start_as_current_span("client call") as client_span:
            await oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest())
        await health_stub(channel).Check(health_pb2.HealthCheckRequest())
    caller = client_span.get_span_context()
    (inside,) = servicer.seen
    assert inside.trace_id == caller.trace_id
    # One CLIENT span (the health check has none), child of the caller's span ...
    (call_span,) = spans(SpanKind.CLIENT)
    assert call_span.name == "/inference.GRPCInferenceService/ServerLive"
    assert call_span.parent is not None and call_span.parent.span_id == caller.span_id
    # ... and one SERVER span (neither has the health check), child of the CLIENT span.
    (server_span,) = spans(SpanKind.SERVER)
    assert server_span.name == "/inference.GRPCInferenceService/ServerLive"
    assert server_span.parent is not None and server_span.parent.span_id == call_span.context.span_id
    assert server_span.attributes is not None and server_span.attributes["rpc.grpc.status_code"] == 0


async def test_a_failed_call_marks_its_span_with_the_status() -> None:
    servicer = LiveServicer()  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    async with serving(servicer) as address, grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await oip_grpc.GRPCInferenceServiceStub(channel).ServerReady(oip.ServerReadyRequest())
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    (server_span,) = spans(SpanKind.SERVER)
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert not server_span.status.is_ok


async def test_a_call_without_a_trace_starts_one_at_the_server() -> None:
    servicer = LiveServicer()  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    async with serving(servicer) as address, grpc.aio.insecure_channel(address) as channel:
        await oip_grpc.GRPCInferenceServiceStub(channel).ServerLive(oip.ServerLiveRequest())
    (server_span,) = spans(SpanKind.SERVER)
    assert server_span.parent is None
    assert servicer.seen[0].trace_id == server_span.context.trace_id


async def test_an_http_route_gets_a_span_named_by_its_template_but_probes_and_scrapes_do_not() -> None:
    app = create_app("traced", "test", verifier=KEYS.verifier())

    @app.get("/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {
            "name": name,
            "trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x"),
        }

    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    port = server.port
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = (await client.get("/v1/things/a")).json()
            for probe in ("/health/live", "/health/ready", "/metrics"):
                assert (await client.get(probe)).status_code == 200
    finally:
        await server.stop()
    # Only this server's spans: apps of other suites may still be answering in this process.
    (span,) = [s for s in spans(SpanKind.SERVER) if (s.attributes or {}).get("net.host.port") == port]
    assert span.name == "GET /v1/things/{name}"
    assert span.attributes is not None and span.attributes["http.status_code"] == 200
    assert answer["trace_id"] == format(span.context.trace_id, "032x"), "the route ran inside its span"


async def test_a_kafka_record_carries_its_trace_to_the_consumer(infra: Infra, topics: Topics) -> None:
    source = topics.labels
    await ensure_topics(infra.kafka_bootstrap, [source, Topics.dlq(source)], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test-tracing")
    await producer.start()
    seen: list[tuple[str, trace.SpanContext]] = []
    got_first, got_all = asyncio.Event(), asyncio.Event()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        for record in records:
            seen.append(
                (record.key.decode() if record.key else "", trace.get_current_span().get_span_context())
            )
        got_first.set()
        if len(seen) >= 3:
            got_all.set()
        return []

    loop = ConsumerLoop(
        bootstrap_servers=infra.kafka_bootstrap,
        topics=[source],
        group_id=f"{topics.prefix}.tracing",
        handler=handler,
        producer=producer,
        client_id="test-tracing",
    )
    try:
        with tracing.tracer().start_as_current_span("label arrives") as first:
            traced = encode(source, events_pb2.LabelRecord(event_id="e1"), source="/test", key="e1")
        untraced = encode(source, events_pb2.LabelRecord(event_id="e2"), source="/test", key="e2")
        assert ("traceparent" in dict(traced.headers)) and ("traceparent" not in dict(untraced.headers))
        await publish(producer, [traced])
        await loop.start()
        async with asyncio.timeout(30):
            await got_first.wait()
        with tracing.tracer().start_as_current_span("second trace") as second:
            other = encode(source, events_pb2.LabelRecord(event_id="e3"), source="/test", key="e3")
        await publish(producer, [untraced, other])
        async with asyncio.timeout(30):
            await got_all.wait()
    finally:
        await loop.stop()
        await producer.stop()

    by_key = dict(seen)
    # Handled alone: the handler runs inside a child of the producer's span.
    assert by_key["e1"].trace_id == first.get_span_context().trace_id
    consumer_spans = spans(SpanKind.CONSUMER)
    assert consumer_spans[0].name == f"process {source}"
    assert consumer_spans[0].parent is not None
    assert consumer_spans[0].parent.span_id == first.get_span_context().span_id
    # Handled in one batch or in two, a traced record is reachable from its handling span.
    reachable = {s.context.trace_id for s in consumer_spans} | {
        link.context.trace_id for s in consumer_spans for link in s.links
    }
    assert second.get_span_context().trace_id in reachable


def test_log_lines_inside_a_span_carry_its_ids() -> None:
    with tracing.tracer().start_as_current_span("work") as span:
        event = add_trace_ids(logging.getLogger(), "info", {"event": "x"})
    context = span.get_span_context()
    assert event["trace_id"] == format(context.trace_id, "032x")
    assert event["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in add_trace_ids(logging.getLogger(), "info", {"event": "outside"})
    json.dumps(event)


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_spans_are_exported_only_when_an_endpoint_is_configured(
    env: dict[str, str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.exporting() is expected
