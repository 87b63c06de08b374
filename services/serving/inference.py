"""The data plane: one inference request, whatever protocol it came in on.

Route (model, version, alias, rollout) -> decode and check the inputs against the
chosen version's signature -> predict through the version's batcher -> pick the
requested outputs -> log the prediction. Shadow traffic is answered afterwards, off
the response path. The gRPC and HTTP adapters translate to and from this module.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from services.common.auth import Principal
from services.common.errors import PlatformError
from services.common.logging import get_logger
from services.serving.errors import InvalidInput
from services.serving.models import LoadedVersion, ModelManager, Route
from services.serving.predictor import EXPLANATION_OUTPUTS, FeatureBatch, Outputs
from services.serving.routing import SHADOW_ROUTE
from services.serving.tensors import Tensor

log = get_logger(__name__)

ALIAS_PARAMETER = "alias"
ROUTING_KEY_PARAMETER = "routing_key"
EXPLAIN_PARAMETER = "explain"
"""Boolean request parameter: also return the feature contributions (see :mod:`.explain`)."""
PREDICTION_LOG_PARAMETER = "prediction_log"
"""Boolean request parameter, true by default: false keeps the answer out of the prediction
log (batch scoring of stored rows, which are not live traffic for the monitor to judge)."""


@dataclass(frozen=True)
class InferenceRequest:
    """A request as the adapters hand it over.

    ``decode_inputs`` turns the transport's tensors into :class:`Tensor` (raising
    :class:`InvalidInput`); it runs only once the model is known to be served, so an
    unknown model is NOT_FOUND whatever the inputs look like.
    """

    model_name: str
    decode_inputs: Callable[[], Sequence[Tensor]]
    model_version: str = ""
    id: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    outputs: Sequence[str] = ()
    caller: Principal | None = None
    """Who asks: a model of a team it does not act for is not served to it."""


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


@dataclass(frozen=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    route: str


class PredictionSink(Protocol):
    """Where served predictions are recorded (the Kafka prediction log)."""

    def record(
        self,
        *,
        request_id: str,
        version: LoadedVersion,
        route: str,
        shadow: bool,
        batch: FeatureBatch,
        outputs: Outputs,
        latency_seconds: float,
    ) -> None: ...


class RequestObserver:
    """Receives the outcome of each request (the service hangs its metrics here)."""

    def request(self, model: str, version: str, code: str, seconds: float, rows: int) -> None:
        """A request finished with gRPC status ``code``."""

    def shadow(self, model: str, outcome: str) -> None:
        """A shadow copy was answered, skipped or failed."""


class InferenceService:
    """Answers inference requests from the models the manager serves.

    Parameters
    ----------
    manager
        The served models.
    max_rows
        Rows per request at most.
    sink
        The prediction log; ``None`` logs nothing (and mirrors nothing to shadows).
    shadow_max_queue_rows
        A shadow copy is skipped while its version has this many rows waiting.
    """

    def __init__(
        self,
        manager: ModelManager,
        *,
        max_rows: int,
        sink: PredictionSink | None = None,
        observer: RequestObserver | None = None,
        shadow_max_queue_rows: int = 1024,
    ):
        self._manager = manager
        self._max_rows = max_rows
        self._sink = sink
        self._observer = observer or RequestObserver()
        self._shadow_max_queue_rows = shadow_max_queue_rows
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        started = time.perf_counter()
        model_label, version_label, rows = "", "", 0
        try:
            route = self._manager.route(
                request.model_name,
                request.model_version,
                _string_parameter(request.parameters, ALIAS_PARAMETER),
                _string_parameter(request.parameters, ROUTING_KEY_PARAMETER) or None,
                request.caller,
            )
            model_label, version_label = route.model.name, str(route.target.number)
            predictor = route.target.predictor
            tensors = request.decode_inputs()
            batch = predictor.assemble(tensors, self._max_rows)
            rows = batch.rows
            selected = predictor.check_outputs(
                request.outputs, _bool_parameter(request.parameters, EXPLAIN_PARAMETER)
            )
            outputs = await route.target.batcher.submit(batch.matrix)
            if any(name in EXPLANATION_OUTPUTS for name in selected):
                # Not batched: explanations are asked for rarely, and cost more than the answer.
                outputs = outputs | await route.target.batcher.run(predictor.contributions, batch.matrix)
        except Exception as exc:
            code = exc.kind.grpc_code if isinstance(exc, PlatformError) else "INTERNAL"
            self._observer.request(model_label, version_label, code, time.perf_counter() - started, rows)
            raise
        latency = time.perf_counter() - started
        request_id = request.id or os.urandom(16).hex()
        self._observer.request(model_label, version_label, "OK", latency, rows)
        if self._sink is not None and _bool_parameter(request.parameters, PREDICTION_LOG_PARAMETER, True):
            self._sink.record(
                request_id=request_id,
                version=route.target,
                route=route.route,
                shadow=False,
                batch=batch,
                outputs=outputs,
                latency_seconds=latency,
            )
            if route.shadow is not None:
                self._mirror(route, tensors, request_id)
        return InferenceResponse(
            model_name=route.model.name,
            model_version=str(route.target.number),
            id=request_id,
            outputs=[
                OutputTensor(
                    name, predictor.outputs[name].datatype, tuple(outputs[name].shape), outputs[name]
                )
                for name in selected
            ],
            route=route.route,
        )

    def _mirror(self, route: Route, tensors: Sequence[Tensor], request_id: str) -> None:
        shadow = route.shadow
        assert shadow is not None
        if shadow.batcher.queued_rows >= self._shadow_max_queue_rows:
            self._observer.shadow(route.model.name, "skipped")
            return
        task = asyncio.create_task(self._answer_shadow(route.model.name, shadow, tensors, request_id))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _answer_shadow(
        self, model: str, shadow: LoadedVersion, tensors: Sequence[Tensor], request_id: str
    ) -> None:
        started = time.perf_counter()
        try:
            batch = shadow.predictor.assemble(tensors, self._max_rows)
            outputs = await shadow.batcher.submit(batch.matrix)
        except Exception as exc:
            # The candidate's signature or model may refuse what production accepted: that is
            # worth knowing, never worth failing anything for.
            self._observer.shadow(model, "failed")
            log.info("shadow_failed", model=model, version=shadow.number, error=str(exc))
            return
        self._observer.shadow(model, "answered")
        assert self._sink is not None
        self._sink.record(
            request_id=request_id,
            version=shadow,
            route=SHADOW_ROUTE,
            shadow=True,
            batch=batch,
            outputs=outputs,
            latency_seconds=time.perf_counter() - started,
        )

    async def drain_shadows(self, grace: float = 5.0) -> None:
        """Wait for shadow answers in flight (at shutdown, so their records are not lost)."""
        if self._shadow_tasks:
            await asyncio.wait(set(self._shadow_tasks), timeout=grace)


def _bool_parameter(parameters: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter '{name}' must be a boolean, got {type(value).__name__}")
    return value


def _string_parameter(parameters: Mapping[str, Any], name: str) -> str:
    value = parameters.get(name, "")
    if not isinstance(value, str):
        raise InvalidInput(f"parameter '{name}' must be a string, got {type(value).__name__}")
    return value
