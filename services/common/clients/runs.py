"""Async client of the registry's training runs, ``mlops.v1.RunService``.

Served by the registry on its gRPC port, beside ``mlops.v1.RegistryService``::

    async with RunClient("127.0.0.1:50051", credentials) as runs:
        failed = await runs.list_runs("churn", state=RUN_STATE_FAILED, limit=20)

Errors surface as :class:`~services.common.errors.PlatformError` of the registry's kind
(``NotFound`` for an unknown run id ...).
"""

from __future__ import annotations

from collections.abc import Callable

from services.common.clients.base import GrpcClient
from services.common.proto.mlops.v1 import runs_pb2, runs_pb2_grpc
from services.common.tls import ClientTls

Run = runs_pb2.Run
RunState = runs_pb2.RunState
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class RunClient(GrpcClient):
    """Typed calls to ``mlops.v1.RunService``; one channel per client."""

    def __init__(
        self, address: str, token: Callable[[], str], *, timeout: float = 30.0, tls: ClientTls | None = None
    ):
        super().__init__(address, token, max_message_bytes=MAX_MESSAGE_BYTES, tls=tls)
        self._runs = self._stub(runs_pb2_grpc.RunServiceStub)
        self._timeout = timeout

    async def get_run(self, run_id: str) -> Run:
        """The run opened by ``run_id`` (a train request id), or the run it was coalesced into."""
        return await self._runs.GetRun(
            runs_pb2.GetRunRequest(run_id=run_id), metadata=self._metadata(None), timeout=self._timeout
        )

    async def list_runs(
        self,
        model_name: str = "",
        *,
        state: RunState.ValueType = runs_pb2.RUN_STATE_UNSPECIFIED,
        limit: int = 100,
    ) -> list[Run]:
        """Up to ``limit`` runs, newest first, of one model and in one state when given."""
        runs: list[Run] = []
        request = runs_pb2.ListRunsRequest(model_name=model_name, state=state, page_size=min(limit, 500))
        while len(runs) < limit:
            response = await self._runs.ListRuns(
                request, metadata=self._metadata(None), timeout=self._timeout
            )
            runs += response.runs
            request.page_token = response.next_page_token
            if not request.page_token:
                break
        return runs[:limit]
