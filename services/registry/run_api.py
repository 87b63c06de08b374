"""``mlops.v1.RunService`` over gRPC, on the registry's server: translate, call, answer.

Scopes are checked by the registry's ``AuthInterceptor`` (both methods need read; see
:data:`services.registry.access.ACTION_SCOPES`), the run's team by the use case.
"""

from __future__ import annotations

from services.common.grpc_handlers import ServicerContext
from services.common.proto.mlops.v1 import runs_pb2, runs_pb2_grpc
from services.registry.grpc_api import current_actor
from services.registry.metrics import measured_call
from services.registry.registry import Registry

SERVICE_NAME = runs_pb2.DESCRIPTOR.services_by_name["RunService"].full_name


class RunServicer(runs_pb2_grpc.RunServiceServicer):
    def __init__(self, registry: Registry):
        self._registry = registry

    async def GetRun(self, request: runs_pb2.GetRunRequest, context: ServicerContext) -> runs_pb2.Run:
        return await measured_call("GetRun", lambda: self._registry.get_run(current_actor(), request.run_id))

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        async def run() -> runs_pb2.ListRunsResponse:
            page = await self._registry.list_runs(
                current_actor(),
                request.model_name,
                request.state,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return runs_pb2.ListRunsResponse(runs=page.items, next_page_token=page.next_page_token)

        return await measured_call("ListRuns", run)
