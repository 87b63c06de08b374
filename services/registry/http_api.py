"""The REST mirror of ``mlops.v1.RegistryService`` (FastAPI; OpenAPI at ``/openapi.json``).

Same registry, same checks, same audit trail as the gRPC API; each route is named after
the RPC it mirrors (the audit log's ``action``). Registry errors map to the HTTP status
matching their gRPC code: INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED
403, NOT_FOUND 404, ALREADY_EXISTS / ABORTED (lost compare-and-set) / FAILED_PRECONDITION
409, RESOURCE_EXHAUSTED 413; malformed JSON or parameters get FastAPI's 422 naming the
field.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from google.protobuf.message import Message
from pydantic import AwareDatetime, BaseModel, ValidationError
from pymongo.errors import PyMongoError

from services.common.auth import Principal, Scope, TokenVerifier
from services.common.clients.registry import parse_metric_filter
from services.common.http import HttpDenialHook, create_app, require_scope
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.errors import InvalidArgument, RegistryError, from_database
from services.registry.registry import Actor, Page, Registry
from services.registry.settings import RegistrySettings

if TYPE_CHECKING:
    # The shapes are built from the protobuf descriptors at import time; for the type
    # checker they are plain pydantic models.
    from pydantic import BaseModel as ArchiveBody
    from pydantic import BaseModel as CreateModelBody
    from pydantic import BaseModel as ModelSpecBody
    from pydantic import BaseModel as ReviewBody
    from pydantic import BaseModel as RollbackBody
    from pydantic import BaseModel as SetAliasBody
    from pydantic import BaseModel as UpdateModelBody
else:
    from services.registry.rest_models import (
        ArchiveBody,
        CreateModelBody,
        ReviewBody,
        RollbackBody,
        SetAliasBody,
        UpdateModelBody,
    )
    from services.registry.rest_models import ModelSpec as ModelSpecBody

log = get_logger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Room for the metadata part and multipart framing on top of the largest artifact.
UPLOAD_OVERHEAD_BYTES = 8 * 1024 * 1024
_UPLOAD_PATH = re.compile(r"/v1/models/[^/]+/versions/?")

ModelName = Annotated[str, Path(description="The model's name.", max_length=1024)]
AliasName = Annotated[
    str, Path(description="An alias such as production, staging or candidate.", max_length=1024)
]
VersionNumber = Annotated[int, Path(ge=1, le=2**63 - 1, description="The version number.")]
PageSize = Annotated[int, Query(ge=0, le=2**31 - 1, description="0: the server's default.")]
PageToken = Annotated[str, Query(max_length=4096, description="next_page_token of the previous page.")]

Reader = Annotated[Principal, Depends(require_scope(Scope.READ))]
Writer = Annotated[Principal, Depends(require_scope(Scope.WRITE))]
Promoter = Annotated[Principal, Depends(require_scope(Scope.PROMOTE))]
Approver = Annotated[Principal, Depends(require_scope(Scope.APPROVE))]
Admin = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": shapes.Problem, "description": "Bad input; `field` names what to fix."},
    401: {"model": shapes.Problem, "description": "Missing or invalid bearer token."},
    403: {"model": shapes.Problem, "description": "The token lacks the scope, or a rule forbids the change."},
    404: {"model": shapes.Problem, "description": "Unknown model, version, alias or spec."},
    409: {"model": shapes.Problem, "description": "Exists already, lost a compare-and-set, or wrong state."},
}
ARTIFACT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The artifact's bytes; `Repr-Digest` and `X-Artifact-Sha256` carry its SHA-256.",
    },
    500: {"model": shapes.Problem, "description": "The stored bytes no longer match their digest."},
}


def request_id(request: Request) -> str:
    value = getattr(request.state, "request_id", "")
    return value if isinstance(value, str) and value else uuid.uuid4().hex


def operation_name(request: Request) -> str:
    """The route's operation (named like the gRPC method), for the audit log."""
    route = request.scope.get("route")
    return route.name if isinstance(route, APIRoute) else request.url.path[:128]


def _problem(exc: RegistryError) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.message, "field": exc.field, "code": exc.grpc_code.name}, status_code=exc.http_status
    )


def _parse_tags(values: list[str], field: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep:
            raise InvalidArgument(f"{field}: expected key=value, got {value[:64]!r}", field=field)
        tags[key] = text
    return tags


def _parse_metric_filters(values: list[str]) -> list[registry_pb2.MetricFilter]:
    try:
        return [parse_metric_filter(value) for value in values]
    except ValueError as exc:
        raise InvalidArgument(f"metric: {exc}", field="metric") from None


def _status(name: str) -> registry_pb2.VersionStatus.ValueType:
    if not name:
        return registry_pb2.VERSION_STATUS_UNSPECIFIED
    try:
        return registry_pb2.VersionStatus.Value(name)
    except ValueError:
        raise InvalidArgument(
            f"status: one of {', '.join(registry_pb2.VersionStatus.keys())}", field="status"
        ) from None


def _paged(shape: type[BaseModel], response: type[Message], items: str, page: Page) -> Any:
    """One page of a list as its REST shape: the items under ``items``, and the next page's token."""
    return shapes.from_proto(shape, response(**{items: page.items, "next_page_token": page.next_page_token}))


def create_http_app(
    registry: Registry,
    settings: RegistrySettings,
    verifier: TokenVerifier,
    *,
    ready: Callable[[], bool],
    on_denied: HttpDenialHook | None = None,
) -> FastAPI:
    app = create_app(
        "MLOps model registry",
        "1.0",
        verifier=verifier,
        ready=ready,
        on_denied=on_denied,
        description=(
            "Models, versions, aliases (compare-and-set), approvals, rollback, lineage, specs, artifacts "
            "addressed by SHA-256 and the audit log. Mirrors the gRPC service `mlops.v1.RegistryService`."
        ),
    )

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return _problem(exc)

    @app.exception_handler(PyMongoError)
    async def database_error(request: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("database_error", path=request.url.path, error=repr(exc))
        return _problem(from_database(exc))

    @app.middleware("http")
    async def bind_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Give every request an id (the caller's, if it sent one) and bound artifact uploads
        before their body is read."""
        request.state.request_id = request.headers.get(REQUEST_ID_HEADER, "")[:128] or uuid.uuid4().hex
        if request.method == "POST" and _UPLOAD_PATH.fullmatch(request.url.path):
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "Content-Length is required for uploads"}, status_code=411)
            if not length.isdigit():
                return JSONResponse({"detail": "Content-Length is not a number"}, status_code=400)
            if int(length) > settings.max_artifact_bytes + UPLOAD_OVERHEAD_BYTES:
                return JSONResponse(
                    {"detail": f"upload over the limit of {settings.max_artifact_bytes} artifact bytes"},
                    status_code=413,
                )
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request.state.request_id
        return response

    def actor(request: Request, principal: Principal) -> Actor:
        return Actor(principal.subject, request_id(request), "http")

    router = APIRouter(prefix="/v1", responses=ERRORS)

    def model_list_route(
        items: str,
        operation: str,
        shape: type[BaseModel],
        response: type[Message],
        fetch: Callable[..., Awaitable[Page]],
        *,
        description: str = "",
    ) -> None:
        """``GET /v1/models/{name}/<items>``: one page of a model's versions or specs."""

        @router.get(
            f"/models/{{name}}/{items}",
            name=operation,
            description=description,
            response_model=shape,
            tags=[items],
        )
        async def list_route(
            name: ModelName, principal: Reader, page_size: PageSize = 0, page_token: PageToken = ""
        ) -> Any:
            page = await fetch(name, page_size=page_size, page_token=page_token)
            return _paged(shape, response, items, page)

    # ------------------------------------------------------------------ models

    @router.post("/models", name="CreateModel", status_code=201, response_model=shapes.Model, tags=["models"])
    async def create_model(request: Request, body: CreateModelBody, principal: Writer) -> Any:
        """Register a model name with its promotion policy (409 if it exists)."""
        message = shapes.to_proto(body, registry_pb2.CreateModelRequest(), "body")
        model = await registry.create_model(
            actor(request, principal),
            message.name,
            message.description,
            dict(message.tags),
            message.promotion_policy,
        )
        return shapes.from_proto(shapes.Model, model)

    @router.get("/models", name="ListModels", response_model=shapes.ListModels, tags=["models"])
    async def list_models(
        principal: Reader,
        alias: Annotated[str, Query(max_length=1024, description="Only models with this alias set.")] = "",
        name_contains: Annotated[str, Query(max_length=1024)] = "",
        tag: Annotated[list[str], Query(description="key=value; every one must match.")] = [],  # noqa: B006
        page_size: PageSize = 0,
        page_token: PageToken = "",
    ) -> Any:
        page = await registry.list_models(
            alias=alias,
            name_contains=name_contains,
            tags=_parse_tags(tag, "tag"),
            page_size=page_size,
            page_token=page_token,
        )
        return _paged(shapes.ListModels, registry_pb2.ListModelsResponse, "models", page)

    @router.get("/models/{name}", name="GetModel", response_model=shapes.Model, tags=["models"])
    async def get_model(name: ModelName, principal: Reader) -> Any:
        return shapes.from_proto(shapes.Model, await registry.get_model(name))

    @router.patch("/models/{name}", name="UpdateModel", response_model=shapes.Model, tags=["models"])
    async def update_model(
        request: Request, name: ModelName, body: UpdateModelBody, principal: Writer
    ) -> Any:
        """Change the description, tags or promotion policy; unset fields stay as they are."""
        message = shapes.to_proto(body, registry_pb2.UpdateModelRequest(), "body")
        model = await registry.update_model(
            actor(request, principal),
            name,
            description=message.description if message.HasField("description") else None,
            set_tags=dict(message.set_tags),
            remove_tags=list(message.remove_tags),
            policy=message.promotion_policy,
        )
        return shapes.from_proto(shapes.Model, model)

    # ---------------------------------------------------------------- versions

    @router.post(
        "/models/{name}/versions",
        name="CreateModelVersion",
        status_code=201,
        response_model=shapes.ModelVersion,
        responses={411: {"description": "Uploads need a Content-Length."}, 413: {"model": shapes.Problem}},
        tags=["versions"],
    )
    async def create_version(
        request: Request,
        name: ModelName,
        principal: Writer,
        metadata: Annotated[
            str,
            Form(description="The version's metadata as JSON (the VersionMetadata message)."),
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

        version = await registry.create_version(actor(request, principal), message, chunks())
        return shapes.from_proto(shapes.ModelVersion, version)

    model_list_route(
        "versions",
        "ListModelVersions",
        shapes.ListVersions,
        registry_pb2.ListModelVersionsResponse,
        registry.list_versions,
        description="The model's versions, newest first.",
    )

    @router.get(
        "/models/{name}/versions/{version}",
        name="GetModelVersion",
        response_model=shapes.ModelVersion,
        tags=["versions"],
    )
    async def get_version(name: ModelName, version: VersionNumber, principal: Reader) -> Any:
        return shapes.from_proto(shapes.ModelVersion, await registry.get_version(name, version))

    @router.get(
        "/models/{name}/aliases/{alias}",
        name="GetModelVersionByAlias",
        response_model=shapes.ModelVersion,
        tags=["aliases"],
    )
    async def get_version_by_alias(name: ModelName, alias: AliasName, principal: Reader) -> Any:
        """The version the alias points at."""
        return shapes.from_proto(shapes.ModelVersion, await registry.get_version(name, alias=alias))

    @router.get(
        "/versions", name="SearchModelVersions", response_model=shapes.ListVersions, tags=["versions"]
    )
    async def search_versions(
        principal: Reader,
        model_name: Annotated[str, Query(max_length=1024)] = "",
        dataset: Annotated[str, Query(max_length=1024, description="Versions trained on this dataset.")] = "",
        content_sha256: Annotated[
            str,
            Query(
                max_length=1024, description="Versions trained on exactly this data (window content hash)."
            ),
        ] = "",
        tag: Annotated[list[str], Query(description="key=value; every one must match.")] = [],  # noqa: B006
        metric: Annotated[
            list[str], Query(description="NAME OP NUMBER, e.g. accuracy>=0.9; every one must match.")
        ] = [],  # noqa: B006
        status: Annotated[
            str, Query(max_length=64, json_schema_extra={"enum": list(registry_pb2.VersionStatus.keys())})
        ] = "",
        alias: Annotated[str, Query(max_length=1024)] = "",
        train_request_id: Annotated[str, Query(max_length=1024)] = "",
        code_version: Annotated[str, Query(max_length=1024)] = "",
        page_size: PageSize = 0,
        page_token: PageToken = "",
    ) -> Any:
        """Versions of any model by lineage, tag, metric, status or alias."""
        query = registry_pb2.SearchModelVersionsRequest(
            model_name=model_name,
            dataset=dataset,
            content_sha256=content_sha256,
            tags=_parse_tags(tag, "tag"),
            metrics=_parse_metric_filters(metric),
            status=_status(status),
            alias=alias,
            train_request_id=train_request_id,
            code_version=code_version,
            page_size=page_size,
            page_token=page_token,
        )
        page = await registry.search_versions(query)
        return _paged(shapes.ListVersions, registry_pb2.ListModelVersionsResponse, "versions", page)

    async def _artifact(name: str, version: int = 0, alias: str = "") -> StreamingResponse:
        resolved, stream = await registry.download(name, version, alias)
        iterator = aiter(stream)
        # Read the first chunk here, so that a missing or damaged file is a proper error
        # response rather than a broken stream.
        first = await anext(iterator, b"")

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in iterator:
                yield chunk

        digest = bytes.fromhex(resolved.artifact.sha256)
        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={
                "Content-Length": str(resolved.artifact.size_bytes),
                "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
                "X-Artifact-Sha256": resolved.artifact.sha256,
                "X-Artifact-Format": resolved.artifact.format,
                "X-Model-Version": str(resolved.version),
            },
        )

    @router.get(
        "/models/{name}/versions/{version}/artifact",
        name="DownloadArtifact",
        response_class=StreamingResponse,
        responses=ARTIFACT_RESPONSE,
        tags=["versions"],
    )
    async def download(name: ModelName, version: VersionNumber, principal: Reader) -> StreamingResponse:
        """The artifact's bytes, verified against its digest while they stream (a damaged
        file breaks the stream rather than delivering wrong bytes)."""
        return await _artifact(name, version)

    @router.get(
        "/models/{name}/aliases/{alias}/artifact",
        name="DownloadArtifactByAlias",
        response_class=StreamingResponse,
        responses=ARTIFACT_RESPONSE,
        tags=["aliases"],
    )
    async def download_by_alias(name: ModelName, alias: AliasName, principal: Reader) -> StreamingResponse:
        return await _artifact(name, alias=alias)

    @router.get(
        "/models/{name}/versions/{version}/lineage",
        name="GetLineage",
        response_model=shapes.LineageResult,
        tags=["versions"],
    )
    async def lineage(name: ModelName, version: VersionNumber, principal: Reader) -> Any:
        """What produced this version (lineage, parent chain) and what it produced, plus other
        versions trained on exactly the same data."""
        return shapes.from_proto(shapes.LineageResult, await registry.lineage(name, version))

    # --------------------------------------------------------- review, archive

    def review_route(decision: str, operation: str, *, approve: bool, description: str) -> None:
        """``POST .../{decision}``: approving and rejecting are one route with two names."""

        @router.post(
            f"/models/{{name}}/versions/{{version}}/{decision}",
            name=operation,
            description=description,
            response_model=shapes.ModelVersion,
            tags=["approvals"],
        )
        async def review(
            request: Request,
            name: ModelName,
            version: VersionNumber,
            principal: Approver,
            body: ReviewBody | None = None,
        ) -> Any:
            message = shapes.to_proto(body or ReviewBody(), registry_pb2.ReviewVersionRequest(), "body")
            reviewed = await registry.review(
                actor(request, principal), name, version, approve=approve, comment=message.comment
            )
            return shapes.from_proto(shapes.ModelVersion, reviewed)

    review_route(
        "approve",
        "ApproveVersion",
        approve=True,
        description="A pending version becomes APPROVED and takes production (not by whoever registered it).",
    )
    review_route(
        "reject",
        "RejectVersion",
        approve=False,
        description="A pending version becomes REJECTED; the comment is required.",
    )

    @router.post(
        "/models/{name}/versions/{version}/archive",
        name="ArchiveVersion",
        response_model=shapes.ModelVersion,
        tags=["versions"],
    )
    async def archive(
        request: Request,
        name: ModelName,
        version: VersionNumber,
        principal: Writer,
        body: ArchiveBody | None = None,
    ) -> Any:
        """Keep the version's record and artifact, but let no alias point at it again."""
        message = shapes.to_proto(body or ArchiveBody(), registry_pb2.ArchiveVersionRequest(), "body")
        archived = await registry.archive(actor(request, principal), name, version, message.reason)
        return shapes.from_proto(shapes.ModelVersion, archived)

    # ----------------------------------------------------------------- aliases

    @router.put(
        "/models/{name}/aliases/{alias}", name="SetAlias", response_model=shapes.Model, tags=["aliases"]
    )
    async def set_alias(
        request: Request, name: ModelName, alias: AliasName, body: SetAliasBody, principal: Promoter
    ) -> Any:
        """Point the alias at a version, with compare-and-set on where it points now."""
        message = shapes.to_proto(body, registry_pb2.SetAliasRequest(), "body")
        model = await registry.set_alias(
            actor(request, principal), name, alias, message.version, message.expected_version, message.reason
        )
        return shapes.from_proto(shapes.Model, model)

    @router.delete(
        "/models/{name}/aliases/{alias}", name="DeleteAlias", response_model=shapes.Model, tags=["aliases"]
    )
    async def delete_alias(
        request: Request,
        name: ModelName,
        alias: AliasName,
        principal: Promoter,
        expected_version: Annotated[
            int, Query(ge=0, le=2**63 - 1, description="When non-zero: only if the alias points here.")
        ] = 0,
    ) -> Any:
        model = await registry.delete_alias(actor(request, principal), name, alias, expected_version)
        return shapes.from_proto(shapes.Model, model)

    @router.post(
        "/models/{name}/rollback", name="Rollback", response_model=shapes.RollbackResult, tags=["aliases"]
    )
    async def rollback(
        request: Request, name: ModelName, principal: Promoter, body: RollbackBody | None = None
    ) -> Any:
        """Move the alias (production by default) back to the version it pointed at before."""
        message = shapes.to_proto(body or RollbackBody(), registry_pb2.RollbackRequest(), "body")
        result = await registry.rollback(
            actor(request, principal), name, message.alias, message.expected_version, message.reason
        )
        return shapes.from_proto(shapes.RollbackResult, result)

    @router.get(
        "/models/{name}/alias-history",
        name="ListAliasHistory",
        response_model=shapes.AliasHistory,
        tags=["aliases"],
    )
    async def alias_history(
        name: ModelName,
        principal: Reader,
        alias: Annotated[str, Query(max_length=1024, description="Empty: every alias.")] = "",
        page_size: PageSize = 0,
        page_token: PageToken = "",
    ) -> Any:
        """Every move of the model's aliases, newest first."""
        page = await registry.alias_history(name, alias, page_size=page_size, page_token=page_token)
        return _paged(shapes.AliasHistory, registry_pb2.ListAliasHistoryResponse, "changes", page)

    # ------------------------------------------------------------------- specs

    @router.post(
        "/models/{name}/specs",
        name="PutModelSpec",
        status_code=201,
        response_model=shapes.ModelSpec,
        tags=["specs"],
    )
    async def put_spec(request: Request, name: ModelName, body: ModelSpecBody, principal: Writer) -> Any:
        """Store the next version of the model's training spec (spec_version is assigned)."""
        spec = shapes.to_proto(body, registry_pb2.PutModelSpecRequest().spec, "body")
        if not spec.model_name:
            spec.model_name = name
        elif spec.model_name != name:
            raise InvalidArgument("spec.model_name: must name the model in the path", field="spec.model_name")
        return shapes.from_proto(shapes.ModelSpec, await registry.put_spec(actor(request, principal), spec))

    model_list_route(
        "specs", "ListModelSpecs", shapes.SpecList, registry_pb2.ListModelSpecsResponse, registry.list_specs
    )

    @router.get(
        "/models/{name}/specs/{spec_version}",
        name="GetModelSpec",
        response_model=shapes.ModelSpec,
        tags=["specs"],
    )
    async def get_spec(
        name: ModelName,
        spec_version: Annotated[int, Path(ge=0, le=2**31 - 1, description="0: the latest.")],
        principal: Reader,
    ) -> Any:
        return shapes.from_proto(shapes.ModelSpec, await registry.get_spec(name, spec_version))

    # ------------------------------------------------------------------- audit

    @router.get("/audit", name="ListAuditRecords", response_model=shapes.AuditLog, tags=["audit"])
    async def audit_log(
        principal: Admin,
        actor_: Annotated[str, Query(alias="actor", max_length=1024)] = "",
        action: Annotated[str, Query(max_length=1024)] = "",
        resource_prefix: Annotated[str, Query(max_length=1024, description="e.g. models/demo")] = "",
        outcome: Annotated[str, Query(max_length=1024)] = "",
        request_id_: Annotated[str, Query(alias="request_id", max_length=1024)] = "",
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        page_size: PageSize = 0,
        page_token: PageToken = "",
    ) -> Any:
        """The append-only audit log, newest first: who did what to which resource, the state
        before and after, the outcome (denials included) and the request id."""
        query = registry_pb2.ListAuditRecordsRequest(
            actor=actor_,
            action=action,
            resource_prefix=resource_prefix,
            outcome=outcome,
            request_id=request_id_,
            page_size=page_size,
            page_token=page_token,
        )
        try:
            if since is not None:
                query.since.FromDatetime(since)
            if until is not None:
                query.until.FromDatetime(until)
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument(f"since/until: {exc}", field="since") from None
        page = await registry.audit_log(query)
        return _paged(shapes.AuditLog, registry_pb2.ListAuditRecordsResponse, "records", page)

    app.include_router(router)
    return app
