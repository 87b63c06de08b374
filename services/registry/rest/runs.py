"""Training runs (read scope): the REST mirror of ``mlops.v1.RunService``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.common.proto.mlops.v1 import runs_pb2
from services.registry import rest_models as shapes
from services.registry.errors import InvalidArgument
from services.registry.rest.deps import Reader, RegistryDep
from services.registry.rest.params import PageSize, PageToken

router = APIRouter(tags=["runs"])


@router.get("/runs", name="ListRuns", response_model=shapes.RunList)
async def list_runs(
    registry: RegistryDep,
    actor: Reader,
    model_name: Annotated[str, Query(max_length=1024, description="Only this model's runs.")] = "",
    state: Annotated[str, Query(max_length=64, description="e.g. RUN_STATE_FAILED.")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """Every trainer job as a run, newest first: failed ones included, with their trials."""
    try:
        wanted = runs_pb2.RunState.Value(state) if state else runs_pb2.RUN_STATE_UNSPECIFIED
    except ValueError:
        raise InvalidArgument(f"state: one of {', '.join(runs_pb2.RunState.keys())}", field="state") from None
    page = await registry.list_runs(actor, model_name, wanted, page_size=page_size, page_token=page_token)
    return shapes.paged(shapes.RunList, runs_pb2.ListRunsResponse, "runs", page)


@router.get("/runs/{run_id}", name="GetRun", response_model=shapes.Run)
async def get_run(
    run_id: Annotated[str, Path(max_length=1024, description="A train request id.")],
    registry: RegistryDep,
    actor: Reader,
) -> Any:
    return shapes.from_proto(shapes.Run, await registry.get_run(actor, run_id))
