"""gRPC adapter: ``mlops.v1.DatasetService`` over :class:`Datasets`.

Scopes (checked by the shared ``AuthInterceptor``, in the dataset's team by the use
cases): ``write`` registers schemas, ``read`` does the rest. The use cases' platform errors
(naming the field at fault) are answered with their status code by the shared server
(``GrpcServer``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.common.auth import MethodScopes, Principal, Scope, current_principal
from services.common.errors import InvalidArgument
from services.common.grpc_handlers import ServicerContext
from services.common.proto.mlops.v1 import datasets_pb2, datasets_pb2_grpc
from services.common.proto.mlops.v1.model_pb2 import MaterializedWindow
from services.ingest.datasets import Datasets, WindowRequest, to_datetime

SERVICE_NAME = "mlops.v1.DatasetService"
SCOPES = MethodScopes(default=Scope.READ, methods={"RegisterSchema": Scope.WRITE})


def caller() -> Principal:
    """The verified caller (the interceptor admits no call without one)."""
    principal = current_principal.get()
    assert principal is not None, "called without the AuthInterceptor"
    return principal


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    def __init__(self, datasets: Datasets):
        self._datasets = datasets

    async def RegisterSchema(
        self, request: datasets_pb2.RegisterSchemaRequest, context: ServicerContext
    ) -> datasets_pb2.DatasetSchema:
        if not request.HasField("schema"):
            raise InvalidArgument("schema: required", field="schema")
        return await self._datasets.register_schema(request.schema, caller())

    async def GetSchema(
        self, request: datasets_pb2.GetSchemaRequest, context: ServicerContext
    ) -> datasets_pb2.DatasetSchema:
        return await self._datasets.get_schema(request.name, request.version, caller())

    async def ListSchemas(
        self, request: datasets_pb2.ListSchemasRequest, context: ServicerContext
    ) -> datasets_pb2.ListSchemasResponse:
        schemas = await self._datasets.list_schemas(caller())
        return datasets_pb2.ListSchemasResponse(schemas=schemas)

    async def ReadWindow(
        self, request: datasets_pb2.ReadWindowRequest, context: ServicerContext
    ) -> AsyncIterator[datasets_pb2.WindowChunk]:
        window = WindowRequest(request.window, request.labelled_only, request.chunk_rows)
        async for item in self._datasets.read_window(window, caller()):
            if isinstance(item, MaterializedWindow):
                yield datasets_pb2.WindowChunk(summary=item)
            else:
                yield datasets_pb2.WindowChunk(rows=item)

    async def GetQualitySummary(
        self, request: datasets_pb2.QualitySummaryRequest, context: ServicerContext
    ) -> datasets_pb2.QualitySummary:
        start = to_datetime(request.start_time) if request.HasField("start_time") else None
        end = to_datetime(request.end_time) if request.HasField("end_time") else None
        return await self._datasets.quality_summary(request.dataset, start, end, caller())
