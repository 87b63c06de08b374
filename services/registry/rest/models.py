"""``/v1/models``: create, list, read and update models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.rest.deps import Reader, RegistryDep, Writer
from services.registry.rest.params import ModelName, PageSize, PageToken, Tags, parse_tags

if TYPE_CHECKING:
    # Built from the protobuf descriptors at import time; plain pydantic models to the type checker.
    from pydantic import BaseModel as CreateModelBody
    from pydantic import BaseModel as UpdateModelBody
else:
    from services.registry.rest_models import CreateModelBody, UpdateModelBody

router = APIRouter(tags=["models"])


@router.post("/models", name="CreateModel", status_code=201, response_model=shapes.Model)
async def create_model(body: CreateModelBody, registry: RegistryDep, actor: Writer) -> Any:
    """Register a model name in a team with its promotion policy (409 if the name is taken)."""
    message = shapes.to_proto(body, registry_pb2.CreateModelRequest(), "body")
    model = await registry.create_model(
        actor, message.name, message.description, dict(message.tags), message.promotion_policy, message.team
    )
    return shapes.from_proto(shapes.Model, model)


@router.get("/models", name="ListModels", response_model=shapes.ListModels)
async def list_models(
    registry: RegistryDep,
    actor: Reader,
    alias: Annotated[str, Query(max_length=1024, description="Only models with this alias set.")] = "",
    name_contains: Annotated[str, Query(max_length=1024)] = "",
    tag: Tags = [],  # noqa: B006
    team: Annotated[str, Query(max_length=1024, description="Only this team's models.")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """The models of the caller's teams (every team's for an admin)."""
    page = await registry.list_models(
        actor,
        team=team,
        alias=alias,
        name_contains=name_contains,
        tags=parse_tags(tag, "tag"),
        page_size=page_size,
        page_token=page_token,
    )
    return shapes.paged(shapes.ListModels, registry_pb2.ListModelsResponse, "models", page)


@router.get("/models/{name}", name="GetModel", response_model=shapes.Model)
async def get_model(name: ModelName, registry: RegistryDep, actor: Reader) -> Any:
    return shapes.from_proto(shapes.Model, await registry.get_model(actor, name))


@router.patch("/models/{name}", name="UpdateModel", response_model=shapes.Model)
async def update_model(name: ModelName, body: UpdateModelBody, registry: RegistryDep, actor: Writer) -> Any:
    """Change the description, tags or promotion policy; unset fields stay as they are."""
    message = shapes.to_proto(body, registry_pb2.UpdateModelRequest(), "body")
    model = await registry.update_model(
        actor,
        name,
        description=message.description if message.HasField("description") else None,
        set_tags=dict(message.set_tags),
        remove_tags=list(message.remove_tags),
        policy=message.promotion_policy,
    )
    return shapes.from_proto(shapes.Model, model)
