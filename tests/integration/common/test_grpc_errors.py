"""Platform errors across a real gRPC hop on loopback: a servicer raises them, the shared
server answers their status with the kind and field in trailers, and the shared client
raises the same kind again, the call's error as its cause."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.common.auth import AuthInterceptor, MethodScopes, Scope
from services.common.clients.datasets import DatasetClient
from services.common.clients.health import health_stub
from services.common.errors import (
    FIELD_METADATA,
    KIND_METADATA,
    Exhausted,
    Internal,
    InvalidArgument,
    NotFound,
    TooLarge,
    Unauthenticated,
)
from services.common.grpc_handlers import ServicerContext
from services.common.grpc_server import GrpcServer
from services.common.kafka import is_transient
from services.common.proto.mlops.v1 import datasets_pb2, datasets_pb2_grpc
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from tests.helpers.keys import KEYS

MAX_MESSAGE_BYTES = 4096


class RefusingServicer(datasets_pb2_grpc.DatasetServiceServicer):
    """Raises platform errors the way the services' use cases do."""

    async def GetSchema(
        self, request: datasets_pb2.GetSchemaRequest, context: ServicerContext
    ) -> datasets_pb2.DatasetSchema:
        if request.name == "busy":
            raise Exhausted("12 requests are waiting; retry later")
        if request.name == "broken":
            raise RuntimeError("a bug, not a verdict")
        raise NotFound(f"no dataset schema {request.name!r}", field="name")

    async def ReadWindow(
        self, request: datasets_pb2.ReadWindowRequest, context: ServicerContext
    ) -> AsyncIterator[datasets_pb2.WindowChunk]:
        yield datasets_pb2.WindowChunk()
        raise InvalidArgument("window.max_rows: must be positive", field="window.max_rows")


@asynccontextmanager
async def refusing_server() -> AsyncIterator[str]:
    server = GrpcServer(
        "127.0.0.1:0",
        interceptors=[AuthInterceptor(KEYS.verifier(), MethodScopes(default=Scope.READ))],
        max_message_bytes=MAX_MESSAGE_BYTES,
    )
    servicer = RefusingServicer()  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    server.add_service(
        datasets_pb2_grpc.add_DatasetServiceServicer_to_server, servicer, "mlops.v1.DatasetService"
    )
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


def reader() -> str:
    return KEYS.mint("tester", Scope.READ)


async def test_a_raised_error_reaches_a_raw_stub_as_its_status_with_kind_and_field() -> None:
    async with refusing_server() as address, grpc.aio.insecure_channel(address) as channel:
        stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSchema(
                datasets_pb2.GetSchemaRequest(name="orders"),
                metadata=(("authorization", f"Bearer {reader()}"),),
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no dataset schema 'orders'"
    trailers = dict(caught.value.trailing_metadata() or ())
    assert (trailers[KIND_METADATA], trailers[FIELD_METADATA]) == ("not_found", "name")


async def test_the_shared_client_raises_the_same_kind_with_the_call_as_its_cause() -> None:
    async with refusing_server() as address, DatasetClient(address, reader) as client:
        with pytest.raises(NotFound) as missing:
            await client.get_schema("orders")
        with pytest.raises(InvalidArgument) as invalid:
            await client.read_window(DataWindow(dataset="orders"))
        with pytest.raises(Exhausted) as busy:
            await client.get_schema("busy")
        with pytest.raises(Internal):
            await client.get_schema("broken")
    assert (missing.value.message, missing.value.field) == ("no dataset schema 'orders'", "name")
    assert isinstance(missing.value.__cause__, grpc.aio.AioRpcError)
    # Raised after a chunk was streamed: still the servicer's kind and field.
    assert invalid.value.field == "window.max_rows"
    # RESOURCE_EXHAUSTED is two kinds; the trailer says which, and only one is worth retrying.
    assert is_transient(busy.value) and not is_transient(missing.value)


async def test_an_auth_denial_and_a_message_over_the_limit_are_platform_errors_too() -> None:
    async with refusing_server() as address:
        async with DatasetClient(address, lambda: "not-a-token") as anonymous:
            with pytest.raises(Unauthenticated, match="invalid token"):
                await anonymous.get_schema("orders")
        async with DatasetClient(address, reader) as client:
            with pytest.raises(TooLarge) as too_large:
                await client.get_schema("x" * MAX_MESSAGE_BYTES)
    # grpc's own refusal carries no kind: it must not be mistaken for "retry later".
    assert not is_transient(too_large.value)


async def test_a_streaming_handler_that_writes_instead_of_yielding_still_works() -> None:
    # The health servicer's Watch writes with context.write(): the error interceptor must
    # keep its form.
    async with refusing_server() as address, grpc.aio.insecure_channel(address) as channel:
        watch = health_stub(channel).Watch(health_pb2.HealthCheckRequest())
        async for reply in watch:
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            break
        watch.cancel()
