"""The Open Inference Protocol over gRPC: a thin translation to the data plane.

Outputs mirror the request's form: a request sent with ``raw_input_contents`` (as
tritonclient does) is answered with ``raw_output_contents``, one with typed
``contents`` gets typed contents back. Errors are the data plane's platform errors,
answered with their status code by the shared server (``GrpcServer``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc

from services.common.aliases import PRODUCTION
from services.common.auth import AuthInterceptor, Principal, current_principal
from services.common.errors import Internal, PlatformError
from services.common.grpc_handlers import Request, Response, ServicerContext
from services.common.logging import get_logger
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.serving.errors import InvalidInput
from services.serving.inference import InferenceRequest, InferenceResponse, InferenceService
from services.serving.models import ModelManager, ModelState
from services.serving.predictor import TensorMeta
from services.serving.tensors import Tensor, fill_contents, from_contents, from_raw, to_raw

log = get_logger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
PUBLIC_METHODS = frozenset({f"/{SERVICE_NAME}/ServerLive", f"/{SERVICE_NAME}/ServerReady"})
SERVER_NAME = "mlops-serving"
EXTENSIONS = ("model_repository",)


class ServingAuthInterceptor(AuthInterceptor):
    """The platform's token check, except for the liveness and readiness probes."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        if handler_call_details.method in PUBLIC_METHODS:
            return await continuation(handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)


def parameters(values: Mapping[str, oip.InferParameter]) -> dict[str, Any]:
    """Request parameters as plain Python values."""
    out: dict[str, Any] = {}
    for key, parameter in values.items():
        kind = parameter.WhichOneof("parameter_choice")
        out[key] = getattr(parameter, kind) if kind else None
    return out


def decode_inputs(request: oip.ModelInferRequest) -> list[Tensor]:
    """The request's tensors from ``raw_input_contents`` or typed ``contents``."""
    raw = request.raw_input_contents
    if not raw:
        return [from_contents(t.name, t.datatype, t.shape, t.contents) for t in request.inputs]
    if len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "it needs one per input, in order"
        )
    tensors = []
    for tensor, data in zip(request.inputs, raw, strict=True):
        if tensor.contents.ByteSize():
            raise InvalidInput(f"input '{tensor.name}' has both contents and raw_input_contents")
        tensors.append(from_raw(tensor.name, tensor.datatype, tensor.shape, data))
    return tensors


def encode_response(response: InferenceResponse, raw: bool) -> oip.ModelInferResponse:
    message = oip.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    message.parameters["route"].string_param = response.route
    for output in response.outputs:
        tensor = message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if raw:
            message.raw_output_contents.append(to_raw(output.datatype, output.data))
        else:
            fill_contents(output.datatype, output.data, tensor.contents)
    return message


def _tensor_metadata(
    tensors: Sequence[TensorMeta],
) -> list[oip.ModelMetadataResponse.TensorMetadata]:
    return [
        oip.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)
        for t in tensors
    ]


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """Every RPC of ``inference.GRPCInferenceService``, the model-repository index included."""

    def __init__(
        self, service: InferenceService, manager: ModelManager, *, ready: Callable[[], bool], version: str
    ):
        self._service = service
        self._manager = manager
        self._ready = ready
        self._version = version

    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: ServicerContext
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: oip.ServerReadyRequest, context: ServicerContext
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._ready())

    async def ModelReady(
        self, request: oip.ModelReadyRequest, context: ServicerContext
    ) -> oip.ModelReadyResponse:
        try:
            self._manager.version(request.name, request.version, current_principal.get())
        except PlatformError:
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: ServicerContext
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: ServicerContext
    ) -> oip.ModelMetadataResponse:
        loaded = self._manager.version(request.name, request.version, current_principal.get())
        model = self._manager.models[request.name]
        predictor = loaded.predictor
        return oip.ModelMetadataResponse(
            name=request.name,
            versions=sorted({str(v.number) for v in model.versions.values()}, key=int),
            platform=predictor.platform,
            inputs=_tensor_metadata(predictor.inputs),
            outputs=_tensor_metadata(list(predictor.outputs.values())),
        )

    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: ServicerContext
    ) -> oip.ModelInferResponse:
        try:
            response = await self._service.infer(
                InferenceRequest(
                    model_name=request.model_name,
                    model_version=request.model_version,
                    id=request.id,
                    parameters=parameters(request.parameters),
                    outputs=[o.name for o in request.outputs],
                    decode_inputs=lambda: decode_inputs(request),
                    caller=current_principal.get(),
                )
            )
        except PlatformError:
            raise
        except Exception:
            log.exception("inference_failed", model=request.model_name)
            raise Internal("internal error while predicting; see the server log") from None
        return encode_response(response, raw=bool(request.raw_input_contents))

    async def RepositoryIndex(
        self, request: oip.RepositoryIndexRequest, context: ServicerContext
    ) -> oip.RepositoryIndexResponse:
        return oip.RepositoryIndexResponse(
            models=repository_index(self._manager, ready_only=request.ready, caller=current_principal.get())
        )


def repository_index(
    manager: ModelManager, *, ready_only: bool, caller: Principal | None
) -> list[oip.RepositoryIndexResponse.ModelIndex]:
    """One entry per served version (READY), or per model that cannot serve yet (LOADING,
    UNAVAILABLE), of the models of the caller's teams."""
    entries = []
    for name in sorted(manager.models):
        model = manager.models[name]
        if caller is not None and not caller.acts_for(model.team):
            continue
        if model.state is ModelState.READY:
            for number in sorted({v.number for v in model.versions.values()}):
                aliases = ", ".join(model.aliases_of(number))
                if model.fallback_from and PRODUCTION in model.aliases_of(number):
                    aliases += f" (in place of version {model.fallback_from}: {model.reason})"
                entries.append(
                    oip.RepositoryIndexResponse.ModelIndex(
                        name=name, version=str(number), state=model.state.value, reason=aliases
                    )
                )
        elif not ready_only:
            entries.append(
                oip.RepositoryIndexResponse.ModelIndex(
                    name=name, state=model.state.value, reason=model.reason
                )
            )
    return entries
