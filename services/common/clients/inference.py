"""Async client of serving's Open Inference Protocol (``inference.GRPCInferenceService``).

What tritonclient does, cut to the platform's convention: one FP64 ``features`` matrix in
(sent as raw little-endian bytes), and the outputs back as numpy arrays by name
(``probabilities`` and ``label`` for classifiers, ``value`` for regressors)::

    async with InferenceClient("127.0.0.1:8001", credentials) as serving:
        answer = await serving.infer("churn", rows)
        answer.outputs["probabilities"]          # [rows, classes], float64

Refusals surface as :class:`~services.common.errors.PlatformError` of serving's kind
(``NotFound`` for an unknown model, ``InvalidArgument`` naming the input at fault ...).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.clients.base import GrpcClient
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.tls import ClientTls

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_RAW = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}
_TYPED = ("fp64_contents", "fp32_contents", "int64_contents", "int_contents", "bool_contents")


def output_values(response: oip.ModelInferResponse, index: int) -> list[Any]:
    """Output ``index`` of ``response`` as a flat list, from raw or typed contents (BYTES as text)."""
    tensor = response.outputs[index]
    if response.raw_output_contents:
        raw = response.raw_output_contents[index]
        if tensor.datatype == "BYTES":
            values, offset = [], 0
            while offset < len(raw):
                (size,) = struct.unpack_from("<I", raw, offset)
                values.append(raw[offset + 4 : offset + 4 + size].decode("utf-8", "replace"))
                offset += 4 + size
            return values
        if tensor.datatype not in _RAW:
            raise ValueError(f"cannot read raw {tensor.datatype} output {tensor.name!r}")
        numbers: list[Any] = np.frombuffer(raw, _RAW[tensor.datatype]).tolist()
        return numbers
    contents = tensor.contents
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") for v in contents.bytes_contents]
    for field in _TYPED:
        values = list(getattr(contents, field))
        if values:
            return values
    return []


@dataclass(frozen=True)
class Inference:
    """One answer: the version that gave it and its outputs, shaped as serving declared them."""

    model_version: str
    outputs: dict[str, np.ndarray[Any, Any]]


class InferenceClient(GrpcClient):
    """Typed calls to serving's ``ModelInfer``; one channel per client."""

    def __init__(
        self, address: str, token: Callable[[], str], *, timeout: float = 30.0, tls: ClientTls | None = None
    ):
        super().__init__(address, token, max_message_bytes=MAX_MESSAGE_BYTES, tls=tls)
        self._serving = self._stub(oip_grpc.GRPCInferenceServiceStub)
        self._timeout = timeout

    async def ready(self, model: str, version: str = "") -> bool:
        """Whether serving has ``version`` of ``model`` loaded (its default route when empty)."""
        response = await self._serving.ModelReady(
            oip.ModelReadyRequest(name=model, version=version),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )
        return bool(response.ready)

    async def infer(
        self,
        model: str,
        rows: np.ndarray[Any, Any],
        *,
        version: str = "",
        alias: str = "",
        request_id: str = "",
    ) -> Inference:
        """The model's answer for ``rows``, a ``[rows, features]`` matrix of numbers in the
        signature's feature order (the default route, a ``version`` or an ``alias``)."""
        matrix = np.ascontiguousarray(rows, dtype="<f8")
        if matrix.ndim != 2:
            raise ValueError(f"rows must be a [rows, features] matrix, got shape {list(matrix.shape)}")
        request = oip.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        request.inputs.add(name="features", datatype="FP64", shape=list(matrix.shape))
        request.raw_input_contents.append(matrix.tobytes())
        if alias:
            request.parameters["alias"].string_param = alias
        return await self._infer(request, request_id)

    async def infer_columns(
        self,
        model: str,
        columns: Mapping[str, Sequence[float | str | None]],
        *,
        version: str = "",
        request_id: str = "",
        row_ids: Sequence[str] = (),
        prediction_log: bool = True,
    ) -> Inference:
        """The answer for one 1-D tensor per column: numbers as FP64, text as BYTES (None is
        missing: NaN, or empty text); the raw fields of a version that derives features, or any model's features by
        name. ``row_ids`` names the rows in the prediction log; ``prediction_log=False``
        keeps the answer out of it."""
        request = oip.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        named: dict[str, Sequence[float | str | None]] = dict(columns)
        if row_ids:
            named["row_ids"] = list(row_ids)
        for name, values in named.items():
            text = any(isinstance(v, str) for v in values)
            request.inputs.add(name=name, datatype="BYTES" if text else "FP64", shape=[len(values)])
            if text:
                encoded = [("" if v is None else str(v)).encode() for v in values]
                request.raw_input_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in encoded))
            else:
                numbers = [np.nan if v is None else v for v in values]
                request.raw_input_contents.append(np.asarray(numbers, dtype="<f8").tobytes())
        if not prediction_log:
            request.parameters["prediction_log"].bool_param = False
        return await self._infer(request, request_id)

    async def _infer(self, request: oip.ModelInferRequest, request_id: str) -> Inference:
        response = await self._serving.ModelInfer(
            request, metadata=self._metadata(request_id or None), timeout=self._timeout
        )
        outputs = {}
        for index, tensor in enumerate(response.outputs):
            values = output_values(response, index)
            outputs[tensor.name] = np.array(
                values, dtype=object if tensor.datatype == "BYTES" else None
            ).reshape(list(tensor.shape))
        return Inference(response.model_version, outputs)
