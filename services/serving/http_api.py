"""The Open Inference Protocol over HTTP/JSON (``/v2/...``): the same data plane as gRPC.

Errors are the platform's problem-details body (``services.common.http_errors``) with
the status matching the gRPC code (400 INVALID_ARGUMENT, 404 NOT_FOUND, 413/429
RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 401/403 for tokens) and the same message as over
gRPC, which the body also carries as ``error``, where the protocol's clients read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.auth import Principal, Scope
from services.common.errors import PlatformError
from services.common.http import require_scope
from services.common.http_errors import problem_response
from services.serving import http_binary
from services.serving.errors import InvalidInput, TooLarge
from services.serving.grpc_api import EXTENSIONS, SERVER_NAME, repository_index
from services.serving.inference import InferenceRequest, InferenceService
from services.serving.models import ModelManager
from services.serving.predictor import TensorMeta
from services.serving.tensors import Tensor, from_json, from_raw, to_json, to_raw

Predict = Annotated[Principal, Depends(require_scope(Scope.PREDICT))]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None
    """Absent when the tensor travels in binary after the JSON (``parameters.binary_data_size``)."""


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] | None = None


class InferBody(BaseModel):
    """An inference request as the protocol's JSON defines it."""

    model_config = ConfigDict(extra="forbid")
    id: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput]
    outputs: list[RequestOutput] = Field(default_factory=list)


class RepositoryIndexBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository_name: str = ""
    ready: bool = False


def _tensors(tensors: list[TensorMeta]) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _parse(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None


def install(
    app: FastAPI,
    service: InferenceService,
    manager: ModelManager,
    *,
    ready: Callable[[], bool],
    version: str,
    max_body_bytes: int,
) -> None:
    """Add the ``/v2`` routes to ``app``."""
    router = APIRouter(prefix="/v2", tags=["inference"])

    @router.get("/health/live", summary="The server is live.")
    async def server_live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", summary="The server is ready (503 while not).")
    async def server_ready() -> JSONResponse:
        is_ready = ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @router.get("", summary="Server metadata.")
    async def server_metadata(principal: Predict) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}

    def model_ready(
        request: Request, name: str, principal: Principal, model_version: str = ""
    ) -> JSONResponse:
        try:
            manager.version(name, model_version, principal)
        except PlatformError as exc:
            return problem_response(exc, request, members={"name": name, "ready": False})
        return JSONResponse({"name": name, "ready": True})

    @router.get("/models/{name}/ready", summary="Whether a model is ready.")
    async def model_ready_default(name: str, request: Request, principal: Predict) -> JSONResponse:
        return model_ready(request, name, principal)

    @router.get("/models/{name}/versions/{model_version}/ready", summary="Whether a model version is ready.")
    async def model_ready_version(
        name: str, model_version: str, request: Request, principal: Predict
    ) -> JSONResponse:
        return model_ready(request, name, principal, model_version)

    def model_metadata(name: str, principal: Principal, model_version: str = "") -> dict[str, Any]:
        loaded = manager.version(name, model_version, principal)
        model = manager.models[name]
        return {
            "name": name,
            "versions": sorted({str(v.number) for v in model.versions.values()}, key=int),
            "platform": loaded.predictor.platform,
            "inputs": _tensors(loaded.predictor.inputs),
            "outputs": _tensors(list(loaded.predictor.outputs.values())),
        }

    @router.get("/models/{name}", summary="A model's metadata (its production version).")
    async def model_metadata_default(name: str, principal: Predict) -> dict[str, Any]:
        return model_metadata(name, principal)

    @router.get("/models/{name}/versions/{model_version}", summary="A model version's metadata.")
    async def model_metadata_version(name: str, model_version: str, principal: Predict) -> dict[str, Any]:
        return model_metadata(name, principal, model_version)

    async def infer(name: str, model_version: str, request: Request, principal: Principal) -> Response:
        header, binary = http_binary.split_body(
            await _read_body(request, max_body_bytes), request.headers.get(http_binary.HEADER_LENGTH)
        )
        body: InferBody = _parse(InferBody, header)
        sizes = [(i.name, http_binary.binary_size(i.name, i.parameters)) for i in body.inputs]
        raw = http_binary.slice_inputs(sizes, binary)
        for given in body.inputs:
            if (given.name in raw) == (given.data is not None):
                raise InvalidInput(
                    f"input '{given.name}' needs either data or parameters.{http_binary.BINARY_DATA_SIZE}, "
                    "not both",
                    field=f"inputs.{given.name}.data",
                )
        binary_default, binary_named = http_binary.binary_outputs(
            body.parameters, [(o.name, o.parameters) for o in body.outputs]
        )

        def decode() -> list[Tensor]:
            return [
                from_raw(i.name, i.datatype, i.shape, raw[i.name])
                if i.data is None
                else from_json(i.name, i.datatype, i.shape, i.data)
                for i in body.inputs
            ]

        response = await service.infer(
            InferenceRequest(
                model_name=name,
                model_version=model_version,
                id=body.id,
                parameters={
                    k: v for k, v in body.parameters.items() if k not in http_binary.TRANSPORT_PARAMETERS
                },
                outputs=[o.name for o in body.outputs],
                decode_inputs=decode,
                caller=principal,
            )
        )
        outputs: list[dict[str, Any]] = []
        binaries: list[bytes] = []
        for o in response.outputs:
            tensor: dict[str, Any] = {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}
            if binary_named.get(o.name, binary_default):
                data = to_raw(o.datatype, o.data)
                tensor["parameters"] = {http_binary.BINARY_DATA_SIZE: len(data)}
                binaries.append(data)
            else:
                tensor["data"] = to_json(o.datatype, o.data)
            outputs.append(tensor)
        content, headers = http_binary.encode_response(
            {
                "model_name": response.model_name,
                "model_version": response.model_version,
                "id": response.id,
                "parameters": {"route": response.route},
                "outputs": outputs,
            },
            binaries,
        )
        media_type = "application/octet-stream" if binaries else "application/json"
        return Response(content, media_type=media_type, headers=headers)

    @router.post("/models/{name}/infer", summary="Inference with a model (production, or by rollout).")
    async def infer_default(name: str, request: Request, principal: Predict) -> Response:
        return await infer(name, "", request, principal)

    @router.post("/models/{name}/versions/{model_version}/infer", summary="Inference with one model version.")
    async def infer_version(name: str, model_version: str, request: Request, principal: Predict) -> Response:
        return await infer(name, model_version, request, principal)

    @router.post("/repository/index", summary="The models this server knows and their state.")
    async def index(request: Request, principal: Predict) -> list[dict[str, str]]:
        body: RepositoryIndexBody = _parse(RepositoryIndexBody, await _read_body(request, 64 * 1024))
        return [
            {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
            for e in repository_index(manager, ready_only=body.ready, caller=principal)
        ]

    app.include_router(router)
