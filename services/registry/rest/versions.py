"""Versions: register one (multipart upload), list, read and search them, their lineage,
and archiving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.common.http_errors import problem_responses
from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.errors import InvalidArgument
from services.registry.rest.deps import Reader, RegistryDep, SettingsDep, Writer
from services.registry.rest.params import (
    ModelName,
    PageSize,
    PageToken,
    Tags,
    VersionNumber,
    parse_metric_filters,
    parse_status,
    parse_tags,
)

if TYPE_CHECKING:
    # Built from the protobuf descriptors at import time; plain pydantic models to the type checker.
    from pydantic import BaseModel as ArchiveBody
else:
    from services.registry.rest_models import ArchiveBody

router = APIRouter(tags=["versions"])


@router.post(
    "/models/{name}/versions",
    name="CreateModelVersion",
    status_code=201,
    response_model=shapes.ModelVersion,
    responses=problem_responses(
        {411: "Uploads need a Content-Length.", 413: "The upload is over the artifact size limit."}
    ),
)
async def create_version(
    name: ModelName,
    registry: RegistryDep,
    settings: SettingsDep,
    actor: Writer,
    metadata: Annotated[
        str, Form(description="The version's metadata as JSON (the VersionMetadata message).")
    ],
    artifact: Annotated[UploadFile, File(description="The artifact's bytes.")],
) -> Any:
    """Register a version: the registry hashes the artifact while storing it and refuses
    it (storing nothing) when its size, SHA-256 or signature does not match."""
    try:
        parsed = shapes.VersionMetadata.model_validate_json(metadata)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", "metadata", *error["loc"])} for error in exc.errors()]
        ) from None
    message = shapes.to_proto(parsed, registry_pb2.VersionMetadata(), "metadata")
    if not message.model_name:
        message.model_name = name
    elif message.model_name != name:
        raise InvalidArgument(
            "metadata.model_name: must name the model in the path", field="metadata.model_name"
        )

    async def chunks() -> AsyncIterator[bytes]:
        while data := await artifact.read(settings.artifact_chunk_bytes):
            yield data

    version = await registry.create_version(actor, message, chunks())
    return shapes.from_proto(shapes.ModelVersion, version)


@router.get("/models/{name}/versions", name="ListModelVersions", response_model=shapes.ListVersions)
async def list_versions(
    name: ModelName, registry: RegistryDep, actor: Reader, page_size: PageSize = 0, page_token: PageToken = ""
) -> Any:
    """The model's versions, newest first."""
    page = await registry.list_versions(actor, name, page_size=page_size, page_token=page_token)
    return shapes.paged(shapes.ListVersions, registry_pb2.ListModelVersionsResponse, "versions", page)


@router.get("/models/{name}/versions/{version}", name="GetModelVersion", response_model=shapes.ModelVersion)
async def get_version(name: ModelName, version: VersionNumber, registry: RegistryDep, actor: Reader) -> Any:
    return shapes.from_proto(shapes.ModelVersion, await registry.get_version(actor, name, version))


@router.get("/versions", name="SearchModelVersions", response_model=shapes.ListVersions)
async def search_versions(
    registry: RegistryDep,
    actor: Reader,
    model_name: Annotated[str, Query(max_length=1024)] = "",
    dataset: Annotated[str, Query(max_length=1024, description="Versions trained on this dataset.")] = "",
    content_sha256: Annotated[
        str,
        Query(max_length=1024, description="Versions trained on exactly this data (window content hash)."),
    ] = "",
    tag: Tags = [],  # noqa: B006
    metric: Annotated[
        list[str], Query(description="NAME OP NUMBER, e.g. accuracy>=0.9; every one must match.")
    ] = [],  # noqa: B006
    status: Annotated[
        str, Query(max_length=64, json_schema_extra={"enum": list(registry_pb2.VersionStatus.keys())})
    ] = "",
    alias: Annotated[str, Query(max_length=1024)] = "",
    train_request_id: Annotated[str, Query(max_length=1024)] = "",
    code_version: Annotated[str, Query(max_length=1024)] = "",
    team: Annotated[str, Query(max_length=1024, description="Only versions of this team's models.")] = "",
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """Versions of any model of the caller's teams by lineage, tag, metric, status or alias."""
    query = registry_pb2.SearchModelVersionsRequest(
        model_name=model_name,
        dataset=dataset,
        content_sha256=content_sha256,
        tags=parse_tags(tag, "tag"),
        metrics=parse_metric_filters(metric),
        status=parse_status(status),
        alias=alias,
        train_request_id=train_request_id,
        code_version=code_version,
        team=team,
        page_size=page_size,
        page_token=page_token,
    )
    page = await registry.search_versions(actor, query)
    return shapes.paged(shapes.ListVersions, registry_pb2.ListModelVersionsResponse, "versions", page)


@router.get(
    "/models/{name}/versions/{version}/lineage", name="GetLineage", response_model=shapes.LineageResult
)
async def lineage(name: ModelName, version: VersionNumber, registry: RegistryDep, actor: Reader) -> Any:
    """What produced this version (lineage, parent chain) and what it produced, plus other
    versions trained on exactly the same data."""
    return shapes.from_proto(shapes.LineageResult, await registry.lineage(actor, name, version))


@router.post(
    "/models/{name}/versions/{version}/archive", name="ArchiveVersion", response_model=shapes.ModelVersion
)
async def archive(
    name: ModelName,
    version: VersionNumber,
    registry: RegistryDep,
    actor: Writer,
    body: ArchiveBody | None = None,
) -> Any:
    """Keep the version's record and artifact, but let no alias point at it again."""
    message = shapes.to_proto(body or ArchiveBody(), registry_pb2.ArchiveVersionRequest(), "body")
    return shapes.from_proto(
        shapes.ModelVersion, await registry.archive(actor, name, version, message.reason)
    )
