"""The trainer with the services it depends on, in process on the session's real broker
and database: ingest (its dataset API serves the windows), the registry (it receives the
versions), and one trainer. They are shared by the package's tests, which isolate
themselves by dataset and model name; a consumer-group join costs seconds."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.clients.registry import RegistryClient
from services.common.events import Topics, encode
from services.common.kafka import create_producer, publish
from services.common.proto.mlops.v1.events_pb2 import ModelEvent, TrainRequest, TrainResult, TrainStatus
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.registry.app import RegistryApp
from services.serving.app import ServingApp
from services.serving.settings import ServingSettings
from services.trainer.app import TrainerApp
from services.trainer.settings import TrainerSettings
from tests.conftest import Infra
from tests.helpers.apps import app_settings, registry_settings, started
from tests.helpers.kafka import TopicReader
from tests.unit.trainer import synthetic

SIGNING_KEY = secrets.token_hex(32)
FINAL = {
    TrainStatus.TRAIN_STATUS_REGISTERED,
    TrainStatus.TRAIN_STATUS_GATES_FAILED,
    TrainStatus.TRAIN_STATUS_FAILED,
    TrainStatus.TRAIN_STATUS_DUPLICATE,
}


class Results(TopicReader[TrainResult]):
    """Every TrainResult on the results topic; waits last up to 90 s (a training job)."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(bootstrap, topic, TrainResult, within=90.0)

    def of(self, request_id: str) -> list[TrainResult]:
        return [r for r in self.received if r.request_id == request_id]

    async def final(self, request_id: str, within: float = 90.0) -> TrainResult:
        """The request's outcome (REGISTERED, GATES_FAILED, FAILED or DUPLICATE)."""
        found = await self.wait_for(lambda r: r.request_id == request_id and r.status in FINAL, within=within)
        return found[0]


@dataclass
class Platform:
    infra: Infra
    topics: Topics
    ingest: IngestApp
    registry_app: RegistryApp
    serving: ServingApp
    trainer: TrainerApp
    producer: AIOKafkaProducer
    registry: RegistryClient
    datasets: DatasetClient
    http: httpx.AsyncClient
    results: Results
    model_events: TopicReader[ModelEvent]

    def trainer_settings(self, **overrides: Any) -> TrainerSettings:
        return trainer_settings(
            self.infra,
            self.topics.prefix,
            self.registry_app.grpc_port,
            self.ingest.grpc_port,
            **{"serving_address": f"127.0.0.1:{self.serving.grpc_port}", **overrides},
        )

    async def dataset(self, name: str, rows: int, seed: int = 0, flip: bool = False) -> None:
        """Register the synthetic schema as ``name`` and store ``rows`` labelled events through ingest."""
        await self.datasets.register_schema(synthetic.schema(name))
        await self.add_events(name, synthetic.events(rows, seed, flip=flip))

    async def add_events(self, name: str, events: list[dict[str, object]]) -> None:
        for start in range(0, len(events), 1000):
            batch = [{"dataset": name, **event} for event in events[start : start + 1000]]
            response = await self.http.post("/v1/events", json=batch)
            response.raise_for_status()
            assert response.json()["rejected"] == 0, response.json()

    async def request(self, request: TrainRequest) -> str:
        """Send a train request keyed by model name, as producers do; its request id."""
        if not request.request_id:
            request.request_id = uuid.uuid4().hex
        await publish(
            self.producer,
            [encode(self.topics.train_requests, request, source="/tests", key=request.model_name)],
        )
        return request.request_id


def trainer_settings(
    infra: Infra, prefix: str, registry_port: int, datasets_port: int, **overrides: Any
) -> TrainerSettings:
    values: dict[str, Any] = {
        "registry_address": f"127.0.0.1:{registry_port}",
        "datasets_address": f"127.0.0.1:{datasets_port}",
        "job_lease_seconds": 6,
        "progress_interval_seconds": 0.2,
        "code_version": "test-sha",
    }
    values.update(overrides)
    return app_settings(TrainerSettings, infra, prefix, **values)


@pytest.fixture(scope="package")
async def platform(infra: Infra) -> AsyncIterator[Platform]:
    prefix = "tt" + uuid.uuid4().hex[:8]
    topics = Topics(prefix)
    token = infra.token(Scope.READ, Scope.WRITE, Scope.INGEST, Scope.PROMOTE)
    async with AsyncExitStack() as running:
        ingest = await running.enter_async_context(
            started(
                IngestApp(
                    app_settings(IngestSettings, infra, prefix, pseudonymization_key=secrets.token_hex(32))
                )
            )
        )
        registry_app = await running.enter_async_context(
            started(RegistryApp(registry_settings(infra, prefix, artifact_signing_key=SIGNING_KEY)))
        )
        # Batch scoring jobs ask serving for their scores.
        serving = await running.enter_async_context(
            started(
                ServingApp(
                    app_settings(
                        ServingSettings,
                        infra,
                        prefix,
                        registry_address=f"127.0.0.1:{registry_app.grpc_port}",
                        artifact_signing_key=SIGNING_KEY,
                        kafka_inference=False,
                    )
                )
            )
        )
        trainer = await running.enter_async_context(
            started(
                TrainerApp(
                    trainer_settings(
                        infra,
                        prefix,
                        registry_app.grpc_port,
                        ingest.grpc_port,
                        serving_address=f"127.0.0.1:{serving.grpc_port}",
                        artifact_signing_key=SIGNING_KEY,
                        online_snapshot_rows=100,
                        online_refresh_seconds=0.5,
                    )
                )
            )
        )
        producer = create_producer(infra.kafka_bootstrap, "trainer-tests", linger_ms=1)
        await producer.start()
        running.push_async_callback(producer.stop)
        results = await running.enter_async_context(Results(infra.kafka_bootstrap, topics.train_results))
        model_events = await running.enter_async_context(
            TopicReader(infra.kafka_bootstrap, topics.model_events, ModelEvent, within=90.0)
        )
        registry = await running.enter_async_context(
            RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: token)
        )
        datasets = await running.enter_async_context(
            DatasetClient(f"127.0.0.1:{ingest.grpc_port}", lambda: token)
        )
        http = await running.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ingest.http_port}",
                headers={"authorization": f"Bearer {token}"},
                timeout=30,
            )
        )
        yield Platform(
            infra,
            topics,
            ingest,
            registry_app,
            serving,
            trainer,
            producer,
            registry,
            datasets,
            http,
            results,
            model_events,
        )


@pytest.fixture
def names(unique: str) -> tuple[str, str]:
    """A dataset name and a model name of this test's own."""
    return f"credit-{unique}", f"credit-model-{unique}"
