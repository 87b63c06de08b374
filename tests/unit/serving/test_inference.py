"""The data plane: routing, checking, predicting, logging and shadowing one request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from services.serving.errors import InvalidInput, ModelNotFound
from services.serving.inference import InferenceRequest, InferenceService, RequestObserver
from services.serving.models import LoadedVersion, ModelManager
from services.serving.predictor import FeatureBatch, Outputs
from services.serving.tensors import Tensor
from tests.unit.serving.conftest import Fitted
from tests.unit.serving.test_models import MemoryRegistry


@dataclass
class Logged:
    request_id: str
    version: int
    route: str
    shadow: bool
    rows: int


class RecordingSink:
    def __init__(self) -> None:
        self.records: list[Logged] = []
        self.arrived = asyncio.Event()

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
    ) -> None:
        self.records.append(Logged(request_id, version.number, route, shadow, batch.rows))
        self.arrived.set()


class Codes(RequestObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def request(self, model: str, version: str, code: str, seconds: float, rows: int) -> None:
        self.seen.append((model, version, code))


def request(X: np.ndarray, model: str = "iris", **kwargs: Any) -> InferenceRequest:
    return InferenceRequest(
        model_name=model, decode_inputs=lambda: [Tensor("features", "FP64", X.shape, X)], **kwargs
    )


@dataclass
class Served:
    inference: InferenceService
    sink: RecordingSink
    codes: Codes
    registry: MemoryRegistry
    manager: ModelManager


@pytest.fixture
async def service(classifier: Fitted, other_classifier: Fitted) -> Served:
    registry = MemoryRegistry()
    registry.add("iris", 1, classifier)
    registry.add("iris", 2, other_classifier, tags={"rollout": "shadow"})
    registry.alias("iris", "production", 1)
    manager = ModelManager(registry)
    await manager.sync_all()
    sink, codes = RecordingSink(), Codes()
    return Served(
        InferenceService(manager, max_rows=100, sink=sink, observer=codes), sink, codes, registry, manager
    )


async def test_an_answer_is_logged_once_with_its_version_and_route(
    service: Served, classifier: Fitted
) -> None:
    inference, sink, codes = service.inference, service.sink, service.codes
    response = await inference.infer(request(classifier.X[:3], id="req-1", outputs=["label"]))
    assert (response.model_version, response.id, response.route) == ("1", "req-1", "production")
    assert [o.name for o in response.outputs] == ["label"]
    assert response.outputs[0].data.tolist() == classifier.estimator.predict(classifier.X[:3]).tolist()
    assert sink.records == [Logged("req-1", 1, "production", False, 3)]
    assert codes.seen == [("iris", "1", "OK")]


async def test_errors_are_counted_under_the_served_model_only(service: Served, classifier: Fitted) -> None:
    inference, sink, codes = service.inference, service.sink, service.codes
    with pytest.raises(ModelNotFound):
        await inference.infer(request(classifier.X[:1], model="no-such-model"))
    with pytest.raises(InvalidInput, match="expected shape"):
        await inference.infer(request(classifier.X[:1, :2]))
    with pytest.raises(InvalidInput, match="parameter 'alias' must be a string"):
        await inference.infer(request(classifier.X[:1], parameters={"alias": 3}))
    # An unknown model's name never becomes a metric label.
    assert codes.seen == [
        ("", "", "NOT_FOUND"),
        ("iris", "1", "INVALID_ARGUMENT"),
        ("", "", "INVALID_ARGUMENT"),
    ]
    assert sink.records == []


async def test_shadow_answers_are_logged_as_shadow_and_never_returned(
    service: Served, classifier: Fitted
) -> None:
    inference, sink = service.inference, service.sink
    service.registry.alias("iris", "candidate", 2)
    await service.manager.sync("iris")
    response = await inference.infer(request(classifier.X[:2], id="req-2"))
    assert response.model_version == "1"
    async with asyncio.timeout(5):
        while len(sink.records) < 2:
            sink.arrived.clear()
            await sink.arrived.wait()
    assert sink.records == [Logged("req-2", 1, "production", False, 2), Logged("req-2", 2, "shadow", True, 2)]
