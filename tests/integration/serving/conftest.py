"""Serving against the real registry, in process, on the session's broker and database.

One registry and one serving app per test package (own database and topic prefix);
each test registers its own model names, so tests share the apps but not their models.
Both hold the same artifact signing key, as the platform's services do, so river models
(signed pickles) are accepted by the one and served by the other.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from services.common.auth import Scope, bearer_metadata
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.flavors.skops import SkopsFlavor
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2
from services.registry.app import RegistryApp
from services.serving.app import ServingApp
from services.serving.models import ModelState
from services.serving.settings import ServingSettings
from services.serving.tensors import decode_bytes_elements
from tests.conftest import Infra
from tests.helpers import environments
from tests.helpers.apps import app_settings, registry_settings, started
from tests.helpers.environments import CLIENT_PYTHON
from tests.helpers.kafka import TopicReader

N_FEATURES = 4
ROOT = Path(__file__).resolve().parents[3]


def require_client() -> None:
    """tritonclient's environment, or a skip (a failure in CI)."""
    environments.require(CLIENT_PYTHON, "client-venv")


SIGNING_KEY = "serving-tests-artifact-signing-key-0123456789"


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
    return Fitted(estimator, X, SkopsFlavor().save(estimator).data)


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
        artifact=registry_pb2.Artifact(format=SkopsFlavor.name),
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


class PredictionReader(TopicReader[events_pb2.PredictionRecord]):
    """Serving's prediction records, from the start of the topic."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(bootstrap, topic, events_pb2.PredictionRecord)

    @property
    def partitions(self) -> dict[str, int]:
        """Request id -> the partition its record was written to."""
        return {e.message.request_id: e.record.partition for e in self.envelopes}

    async def of(self, request_ids: Sequence[str], within: float = 20.0) -> list[events_pb2.PredictionRecord]:
        """The records of ``request_ids`` (every one of them, once each seen)."""
        wanted = set(request_ids)
        await self.wait_until(lambda records: wanted <= {r.request_id for r in records}, within)
        return [r for r in self.received if r.request_id in wanted]


@dataclass
class Stack:
    infra: Infra
    registry: RegistryApp
    serving: ServingApp
    admin: RegistryClient
    topics: Topics
    channel: grpc.aio.Channel
    stub: oip_grpc.GRPCInferenceServiceAsyncStub
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

    async def run_client(
        self, script: Path, case: Path, *, http: bool = False
    ) -> tuple[int, list[dict[str, Any]]]:
        """A client ``script`` from the client environment against this serving (its gRPC
        port, or its HTTP port), with a predict token and ``case``: its exit code and the
        JSON lines it printed."""
        port = self.serving.http_port if http else self.serving.grpc_port
        # The server runs in this event loop: wait for the client without blocking it.
        process = await asyncio.create_subprocess_exec(
            str(CLIENT_PYTHON),
            str(script),
            "--url",
            f"127.0.0.1:{port}",
            "--token",
            self.infra.token(Scope.PREDICT),
            "--case",
            str(case),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            stdout, stderr = await process.communicate()
        sys.stderr.write(stderr.decode())
        lines = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
        assert process.returncode is not None
        return process.returncode, lines


def serving_settings(infra: Infra, prefix: str, registry_port: int, **overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {
        "registry_address": f"127.0.0.1:{registry_port}",
        "max_rows": 256,
        "max_message_bytes": 1024 * 1024,
        # Long enough that the tests see events, not the periodic re-read, doing the work.
        "resync_interval_seconds": 600,
        "artifact_signing_key": SIGNING_KEY,
    }
    values.update(overrides)
    return app_settings(ServingSettings, infra, prefix, **values)


@pytest.fixture(scope="package")
async def stack(infra: Infra) -> AsyncIterator[Stack]:
    prefix = "srv" + uuid.uuid4().hex[:8]
    topics = Topics(prefix)
    async with AsyncExitStack() as running:
        registry = await running.enter_async_context(
            started(RegistryApp(registry_settings(infra, prefix, artifact_signing_key=SIGNING_KEY)))
        )
        serving = await running.enter_async_context(
            started(ServingApp(serving_settings(infra, prefix, registry.grpc_port)))
        )
        admin = await running.enter_async_context(
            RegistryClient(
                f"127.0.0.1:{registry.grpc_port}", lambda: infra.token(Scope.ADMIN, subject="admin")
            )
        )
        channel = await running.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{serving.grpc_port}")
        )
        predictions = await running.enter_async_context(
            PredictionReader(infra.kafka_bootstrap, topics.predictions)
        )
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


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """Serving's HTTP/JSON API with the predict scope."""
    headers = {"authorization": f"Bearer {stack.infra.token(Scope.PREDICT)}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.serving.http_port}", headers=headers
    ) as client:
        yield client
