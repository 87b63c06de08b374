"""Training specs: store the next version of a model's spec, read and list them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.errors import InvalidArgument
from services.registry.rest.deps import Reader, RegistryDep, Writer
from services.registry.rest.params import ModelName, PageSize, PageToken

if TYPE_CHECKING:
    # Built from the protobuf descriptors at import time; a plain pydantic model to the type checker.
    from pydantic import BaseModel as ModelSpecBody
else:
    from services.registry.rest_models import ModelSpec as ModelSpecBody

router = APIRouter(tags=["specs"])


@router.post("/models/{name}/specs", name="PutModelSpec", status_code=201, response_model=shapes.ModelSpec)
async def put_spec(name: ModelName, body: ModelSpecBody, registry: RegistryDep, actor: Writer) -> Any:
    """Store the next version of the model's training spec (spec_version is assigned)."""
    spec = shapes.to_proto(body, registry_pb2.PutModelSpecRequest().spec, "body")
    if not spec.model_name:
        spec.model_name = name
    elif spec.model_name != name:
        raise InvalidArgument("spec.model_name: must name the model in the path", field="spec.model_name")
    return shapes.from_proto(shapes.ModelSpec, await registry.put_spec(actor, spec))


@router.get("/models/{name}/specs", name="ListModelSpecs", response_model=shapes.SpecList)
async def list_specs(
    name: ModelName, registry: RegistryDep, actor: Reader, page_size: PageSize = 0, page_token: PageToken = ""
) -> Any:
    page = await registry.list_specs(actor, name, page_size=page_size, page_token=page_token)
    return shapes.paged(shapes.SpecList, registry_pb2.ListModelSpecsResponse, "specs", page)


@router.get("/models/{name}/specs/{spec_version}", name="GetModelSpec", response_model=shapes.ModelSpec)
async def get_spec(
    name: ModelName,
    spec_version: Annotated[int, Path(ge=0, le=2**31 - 1, description="0: the latest.")],
    registry: RegistryDep,
    actor: Reader,
) -> Any:
    return shapes.from_proto(shapes.ModelSpec, await registry.get_spec(actor, name, spec_version))
