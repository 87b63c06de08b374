"""Serving against the real registry, in process, on the session's broker and database.

One registry and one serving app per test package (own database and topic prefix);
each test registers its own model names, so tests share the apps but not their models.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from services.common.artifacts import SKOPS, dump_sklearn
from services.common.auth import Scope, bearer_metadata
from services.common.clients.registry import RegistryClient
from services.common.events import IncomingRecord, Topics, decode
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.serving.app import ServingApp
from services.serving.models import ModelState
from services.serving.settings import ServingSettings
from services.serving.tensors import decode_bytes_elements
from tests.conftest import Infra

N_FEATURES = 4


@dataclass(frozen=True)
class Fitted:
    estimator: Any
    X: np.ndarray
    artifact: bytes

    def proba(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(rows))


def fit(seed: int) -> Fitted:
    X, y = make_classification(
        n_samples=400, n_features=N_FEATURES, n_informative=3, n_redundant=0, random_state=seed
    )
    estimator = LogisticRegression().fit(X, np.array(["0", "1"], dtype=object)[y])
    return Fitted(estimator, X, dump_sklearn(estimator))


def signature(allow_nan: bool = False) -> model_pb2.Signature:
    """What the trainer writes for a two-class tabular classifier."""
    return model_pb2.Signature(
        inputs=[
            model_pb2.TensorSpec(
                name="features", datatype="FP64", shape=[-1, N_FEATURES], allow_nan=allow_nan
            )
        ],
        outputs=[
            model_pb2.TensorSpec(name="probabilities", datatype="FP64", shape=[-1, 2]),
            model_pb2.TensorSpec(name="label", datatype="BYTES", shape=[-1]),
        ],
        feature_names=[f"f{i}" for i in range(N_FEATURES)],
        classes=["0", "1"],
        task=model_pb2.TASK_CLASSIFICATION,
    )


def version_metadata(
    name: str, fitted: Fitted, *, gates_passed: bool = True, tags: dict[str, str] | None = None
) -> registry_pb2.VersionMetadata:
    return registry_pb2.VersionMetadata(
        model_name=name,
        artifact=registry_pb2.Artifact(format=SKOPS),
        metrics={"accuracy": 0.9},
        signature=signature(),
        lineage=model_pb2.Lineage(
            data=model_pb2.MaterializedWindow(
                window=model_pb2.DataWindow(dataset="demo"), content_sha256="ab" * 32, row_count=400
            ),
            code_version="test",
        ),
        gates=[model_pb2.GateResult(name="min_metric", passed=gates_passed, value=0.9, threshold=0.8)],
        gates_passed=gates_passed,
        tags=tags or {},
    )


class PredictionReader:
    """Reads prediction records from the start of the topic, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str):
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self.records: list[events_pb2.PredictionRecord] = []
        self.partitions: dict[str, int] = {}
        """Request id -> the partition its record was written to."""

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_for(
        self, predicate: Callable[[list[events_pb2.PredictionRecord]], bool], within: float = 20.0
    ) -> list[events_pb2.PredictionRecord]:
        async with asyncio.timeout(within):
            while not predicate(self.records):
                batch = await self._consumer.getmany(timeout_ms=100)
                for records in batch.values():
                    for r in records:
                        incoming = IncomingRecord(
                            r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                        )
                        record = decode(incoming, events_pb2.PredictionRecord).message
                        self.records.append(record)
                        self.partitions[record.request_id] = r.partition
        return self.records

    async def of(self, request_ids: Sequence[str], within: float = 20.0) -> list[events_pb2.PredictionRecord]:
        """The records of ``request_ids`` (every one of them, once each seen)."""
        wanted = set(request_ids)
        await self.wait_for(lambda records: wanted <= {r.request_id for r in records}, within)
        return [r for r in self.records if r.request_id in wanted]


@dataclass
class Stack:
    infra: Infra
    registry: RegistryApp
    serving: ServingApp
    admin: RegistryClient
    topics: Topics
    channel: grpc.aio.Channel
    stub: oip_grpc.GRPCInferenceServiceStub
    predictions: PredictionReader

    def metadata(self, *scopes: Scope, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.infra.token(*(scopes or (Scope.PREDICT,))), request_id)

    async def register(
        self, name: str, fitted: Fitted, *, gates_passed: bool = True, tags: dict[str, str] | None = None
    ) -> registry_pb2.ModelVersion:
        """A new version of ``name``; with passing gates the registry makes it production."""
        await self.admin.create_model(name, exist_ok=True)
        return await self.admin.create_version(
            version_metadata(name, fitted, gates_passed=gates_passed, tags=tags), fitted.artifact
        )

    async def served(self, name: str, within: float = 20.0, **aliases: int) -> None:
        """Wait until serving serves exactly these alias -> version numbers for ``name``."""
        assert self.serving.manager is not None

        def matches(models: Any) -> bool:
            model = models.get(name)
            return (
                model is not None
                and model.state is ModelState.READY
                and {a: v.number for a, v in model.versions.items()} == aliases
            )

        await self.serving.manager.wait_for(matches, within)

    async def gone(self, name: str, within: float = 20.0) -> None:
        assert self.serving.manager is not None
        await self.serving.manager.wait_for(lambda models: name not in models, within)

    async def infer(self, request: oip.ModelInferRequest, *scopes: Scope) -> oip.ModelInferResponse:
        return await self.stub.ModelInfer(request, metadata=self.metadata(*scopes), timeout=10)


def serving_settings(infra: Infra, prefix: str, registry_port: int, **overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "topic_prefix": prefix,
        "auth_secret": infra.auth_secret,
        "registry_address": f"127.0.0.1:{registry_port}",
        "grpc_port": 0,
        "http_port": 0,
        "max_rows": 256,
        "max_message_bytes": 1024 * 1024,
        # Long enough that the tests see events, not the periodic re-read, doing the work.
        "resync_interval_seconds": 600,
    }
    values.update(overrides)
    return ServingSettings(**values)


@pytest.fixture(scope="package")
async def stack(infra: Infra) -> AsyncIterator[Stack]:
    prefix = "srv" + uuid.uuid4().hex[:8]
    registry = RegistryApp(
        RegistrySettings(
            kafka_bootstrap_servers=infra.kafka_bootstrap,
            mongodb_uri=infra.mongodb_uri,
            mongodb_database=prefix,
            topic_prefix=prefix,
            auth_secret=infra.auth_secret,
            grpc_port=0,
            http_port=0,
            outbox_poll_seconds=0.2,
        )
    )
    await registry.start()
    serving = ServingApp(serving_settings(infra, prefix, registry.grpc_port))
    admin = RegistryClient(
        f"127.0.0.1:{registry.grpc_port}", lambda: infra.token(Scope.ADMIN, subject="admin")
    )
    topics = Topics(prefix)
    predictions = PredictionReader(infra.kafka_bootstrap, topics.predictions)
    await serving.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{serving.grpc_port}")
    await predictions.start()
    try:
        yield Stack(
            infra,
            registry,
            serving,
            admin,
            topics,
            channel,
            oip_grpc.GRPCInferenceServiceStub(channel),
            predictions,
        )
    finally:
        await predictions.stop()
        await channel.close()
        await admin.close()
        await serving.stop()
        await registry.stop()


@pytest.fixture(scope="package")
def model_a() -> Fitted:
    return fit(0)


@pytest.fixture(scope="package")
def model_b() -> Fitted:
    return fit(1)


@pytest.fixture
def model_name() -> str:
    return "m-" + uuid.uuid4().hex[:10]


def features_request(
    name: str,
    rows: np.ndarray,
    *,
    raw: bool = True,
    request_id: str = "",
    version: str = "",
    datatype: str = "FP64",
) -> oip.ModelInferRequest:
    """A ModelInfer request with one ``features`` tensor, raw (as tritonclient sends) or typed."""
    request = oip.ModelInferRequest(model_name=name, model_version=version, id=request_id)
    tensor = request.inputs.add(name="features", datatype=datatype, shape=list(rows.shape))
    dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[datatype]
    if raw:
        request.raw_input_contents.append(np.ascontiguousarray(rows, dtype=dtype).tobytes())
    else:
        field = {
            "FP64": "fp64_contents",
            "FP32": "fp32_contents",
            "INT64": "int64_contents",
            "INT32": "int_contents",
        }
        getattr(tensor.contents, field[datatype]).extend(rows.astype(dtype).ravel().tolist())
    return request


def output(response: oip.ModelInferResponse, name: str) -> np.ndarray:
    """An output tensor as numpy, from raw or typed contents."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != name:
            continue
        if response.raw_output_contents:
            raw = response.raw_output_contents[index]
            if tensor.datatype == "BYTES":
                count = int(np.prod(tensor.shape))
                return np.array([v.decode() for v in decode_bytes_elements(name, raw, count)], dtype=object)
            return np.frombuffer(raw, "<f8").reshape(tensor.shape)
        if tensor.datatype == "BYTES":
            return np.array([v.decode() for v in tensor.contents.bytes_contents], dtype=object)
        return np.array(tensor.contents.fp64_contents).reshape(tensor.shape)
    raise KeyError(name)
