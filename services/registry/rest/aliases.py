"""Aliases and approvals: the version an alias points at, moving and removing aliases
(compare-and-set), rollback, the history of moves, and approving or rejecting versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.rest.deps import Approver, Promoter, Reader, RegistryDep
from services.registry.rest.params import AliasName, ModelName, PageSize, PageToken, VersionNumber

if TYPE_CHECKING:
    # Built from the protobuf descriptors at import time; plain pydantic models to the type checker.
    from pydantic import BaseModel as ReviewBody
    from pydantic import BaseModel as RollbackBody
    from pydantic import BaseModel as SetAliasBody
else:
    from services.registry.rest_models import ReviewBody, RollbackBody, SetAliasBody

router = APIRouter()


@router.get(
    "/models/{name}/aliases/{alias}",
    name="GetModelVersionByAlias",
    response_model=shapes.ModelVersion,
    tags=["aliases"],
)
async def get_version_by_alias(
    name: ModelName, alias: AliasName, registry: RegistryDep, actor: Reader
) -> Any:
    """The version the alias points at."""
    return shapes.from_proto(shapes.ModelVersion, await registry.get_version(actor, name, alias=alias))


@router.put("/models/{name}/aliases/{alias}", name="SetAlias", response_model=shapes.Model, tags=["aliases"])
async def set_alias(
    name: ModelName, alias: AliasName, body: SetAliasBody, registry: RegistryDep, actor: Promoter
) -> Any:
    """Point the alias at a version, with compare-and-set on where it points now."""
    message = shapes.to_proto(body, registry_pb2.SetAliasRequest(), "body")
    model = await registry.set_alias(
        actor, name, alias, message.version, message.expected_version, message.reason
    )
    return shapes.from_proto(shapes.Model, model)


@router.delete(
    "/models/{name}/aliases/{alias}", name="DeleteAlias", response_model=shapes.Model, tags=["aliases"]
)
async def delete_alias(
    name: ModelName,
    alias: AliasName,
    registry: RegistryDep,
    actor: Promoter,
    expected_version: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="When non-zero: only if the alias points here.")
    ] = 0,
) -> Any:
    model = await registry.delete_alias(actor, name, alias, expected_version)
    return shapes.from_proto(shapes.Model, model)


@router.post(
    "/models/{name}/rollback", name="Rollback", response_model=shapes.RollbackResult, tags=["aliases"]
)
async def rollback(
    name: ModelName, registry: RegistryDep, actor: Promoter, body: RollbackBody | None = None
) -> Any:
    """Move the alias (production by default) back to the version it pointed at before."""
    message = shapes.to_proto(body or RollbackBody(), registry_pb2.RollbackRequest(), "body")
    result = await registry.rollback(actor, name, message.alias, message.expected_version, message.reason)
    return shapes.from_proto(shapes.RollbackResult, result)


@router.get(
    "/models/{name}/alias-history",
    name="ListAliasHistory",
    response_model=shapes.AliasHistory,
    tags=["aliases"],
)
async def alias_history(
    name: ModelName,
    registry: RegistryDep,
    actor: Reader,
    alias: Annotated[str, Query(max_length=1024, description="Empty: every alias.")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """Every move of the model's aliases, newest first."""
    page = await registry.alias_history(actor, name, alias, page_size=page_size, page_token=page_token)
    return shapes.paged(shapes.AliasHistory, registry_pb2.ListAliasHistoryResponse, "changes", page)


def _review_route(decision: str, operation: str, *, approve: bool, description: str) -> None:
    """``POST .../{decision}``: approving and rejecting are one route with two names."""

    @router.post(
        f"/models/{{name}}/versions/{{version}}/{decision}",
        name=operation,
        description=description,
        response_model=shapes.ModelVersion,
        tags=["approvals"],
    )
    async def review(
        name: ModelName,
        version: VersionNumber,
        registry: RegistryDep,
        actor: Approver,
        body: ReviewBody | None = None,
    ) -> Any:
        message = shapes.to_proto(body or ReviewBody(), registry_pb2.ReviewVersionRequest(), "body")
        reviewed = await registry.review(actor, name, version, approve=approve, comment=message.comment)
        return shapes.from_proto(shapes.ModelVersion, reviewed)


_review_route(
    "approve",
    "ApproveVersion",
    approve=True,
    description="A pending version becomes APPROVED and takes production (not by whoever registered it).",
)
_review_route(
    "reject",
    "RejectVersion",
    approve=False,
    description="A pending version becomes REJECTED; the comment is required.",
)
