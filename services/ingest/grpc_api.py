"""gRPC adapter: ``mlops.v1.DatasetService`` over :class:`Datasets`.

Scopes (checked by the shared ``AuthInterceptor``, in the dataset's team by the use
cases): ``write`` registers schemas, ``read`` does the rest. Errors map to status codes
naming the field at fault.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from services.common.auth import MethodScopes, Principal, Scope, current_principal
from services.common.proto.mlops.v1 import datasets_pb2, datasets_pb2_grpc
from services.common.proto.mlops.v1.model_pb2 import MaterializedWindow
from services.ingest.datasets import (
    Conflict,
    Datasets,
    Denied,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    WindowRequest,
    to_datetime,
)
from services.ingest.schemas import SchemaConflict, SchemaError, SchemaUnsupported

SERVICE_NAME = "mlops.v1.DatasetService"
SCOPES = MethodScopes(default=Scope.READ, methods={"RegisterSchema": Scope.WRITE})

T = TypeVar("T")


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The gRPC status for a domain error; None for anything unexpected."""
    if isinstance(exc, SchemaError | InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Denied):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, SchemaConflict | SchemaUnsupported | FailedPrecondition):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.ABORTED, str(exc)
    return None


async def _answer(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except Exception as exc:
        status = status_of(exc)
        if status is None:
            raise
        await context.abort(*status)
        raise  # pragma: no cover - abort raises


def caller() -> Principal:
    """The verified caller (the interceptor admits no call without one)."""
    principal = current_principal.get()
    assert principal is not None, "called without the AuthInterceptor"
    return principal


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    def __init__(self, datasets: Datasets):
        self._datasets = datasets

    async def RegisterSchema(
        self, request: datasets_pb2.RegisterSchemaRequest, context: grpc.aio.ServicerContext
    ) -> datasets_pb2.DatasetSchema:
        if not request.HasField("schema"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "schema: required")
        return await _answer(context, lambda: self._datasets.register_schema(request.schema, caller()))

    async def GetSchema(
        self, request: datasets_pb2.GetSchemaRequest, context: grpc.aio.ServicerContext
    ) -> datasets_pb2.DatasetSchema:
        return await _answer(
            context, lambda: self._datasets.get_schema(request.name, request.version, caller())
        )

    async def ListSchemas(
        self, request: datasets_pb2.ListSchemasRequest, context: grpc.aio.ServicerContext
    ) -> datasets_pb2.ListSchemasResponse:
        schemas = await self._datasets.list_schemas(caller())
        return datasets_pb2.ListSchemasResponse(schemas=schemas)

    async def ReadWindow(
        self, request: datasets_pb2.ReadWindowRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[datasets_pb2.WindowChunk]:
        window = WindowRequest(request.window, request.labelled_only, request.chunk_rows)
        try:
            async for item in self._datasets.read_window(window, caller()):
                if isinstance(item, MaterializedWindow):
                    yield datasets_pb2.WindowChunk(summary=item)
                else:
                    yield datasets_pb2.WindowChunk(rows=item)
        except Exception as exc:
            status = status_of(exc)
            if status is None:
                raise
            await context.abort(*status)

    async def GetQualitySummary(
        self, request: datasets_pb2.QualitySummaryRequest, context: grpc.aio.ServicerContext
    ) -> datasets_pb2.QualitySummary:
        start = to_datetime(request.start_time) if request.HasField("start_time") else None
        end = to_datetime(request.end_time) if request.HasField("end_time") else None
        return await _answer(
            context, lambda: self._datasets.quality_summary(request.dataset, start, end, caller())
        )
