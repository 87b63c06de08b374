"""The trainer with the services it depends on, in process on the session's real broker
and database: ingest (its dataset API serves the windows), the registry (it receives the
versions), and one trainer. They are shared by the package's tests, which isolate
themselves by dataset and model name; a consumer-group join costs seconds."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.message import Message

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.clients.registry import RegistryClient
from services.common.events import IncomingRecord, Topics, decode, encode
from services.common.kafka import create_producer, publish
from services.common.proto.mlops.v1.events_pb2 import ModelEvent, TrainRequest, TrainResult, TrainStatus
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.trainer.app import TrainerApp
from services.trainer.settings import TrainerSettings
from tests.conftest import Infra
from tests.unit.trainer import synthetic

SIGNING_KEY = secrets.token_hex(32)
FINAL = {
    TrainStatus.TRAIN_STATUS_REGISTERED,
    TrainStatus.TRAIN_STATUS_GATES_FAILED,
    TrainStatus.TRAIN_STATUS_FAILED,
    TrainStatus.TRAIN_STATUS_DUPLICATE,
}


M = TypeVar("M", bound=Message)


class Messages(Generic[M]):
    """Every message of one type on one topic, read from the start, to wait on."""

    def __init__(self, bootstrap: str, topic: str, message_type: type[M]):
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        self._type = message_type
        self.seen: list[M] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            async with self._changed:
                for records in batches.values():
                    for r in records:
                        record = IncomingRecord(
                            r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                        )
                        self.seen.append(decode(record, self._type).message)
                self._changed.notify_all()

    async def wait_for(self, match: Callable[[M], bool], count: int = 1, within: float = 90.0) -> list[M]:
        def found() -> list[M]:
            return [m for m in self.seen if match(m)]

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count)
        return found()


class Results(Messages[TrainResult]):
    """Every TrainResult on the results topic."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(bootstrap, topic, TrainResult)

    def of(self, request_id: str) -> list[TrainResult]:
        return [r for r in self.seen if r.request_id == request_id]

    async def final(self, request_id: str, within: float = 90.0) -> TrainResult:
        """The request's outcome (REGISTERED, GATES_FAILED, FAILED or DUPLICATE)."""
        found = await self.wait_for(lambda r: r.request_id == request_id and r.status in FINAL, within=within)
        return found[0]


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 30.0) -> list[IncomingRecord]:
    """The first ``count`` records of ``topic``, once they are there."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[IncomingRecord] = []
    try:
        async with asyncio.timeout(within):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out += [
                        IncomingRecord(
                            r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                        )
                        for r in records
                    ]
    finally:
        await consumer.stop()
    return out


@dataclass
class Platform:
    infra: Infra
    topics: Topics
    ingest: IngestApp
    registry_app: RegistryApp
    trainer: TrainerApp
    producer: AIOKafkaProducer
    registry: RegistryClient
    datasets: DatasetClient
    http: httpx.AsyncClient
    results: Results
    model_events: Messages[ModelEvent]

    def trainer_settings(self, **overrides: Any) -> TrainerSettings:
        return trainer_settings(
            self.infra, self.topics.prefix, self.registry_app.grpc_port, self.ingest.grpc_port, **overrides
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
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "mongodb_uri": infra.mongodb_uri,
        "mongodb_database": prefix,
        "topic_prefix": prefix,
        "auth_secret": infra.auth_secret,
        "registry_address": f"127.0.0.1:{registry_port}",
        "datasets_address": f"127.0.0.1:{datasets_port}",
        "http_port": 0,
        "job_lease_seconds": 6,
        "progress_interval_seconds": 0.2,
        "code_version": "test-sha",
    }
    values.update(overrides)
    return TrainerSettings(**values)


@pytest.fixture(scope="package")
async def platform(infra: Infra) -> AsyncIterator[Platform]:
    prefix = "tt" + uuid.uuid4().hex[:8]
    topics = Topics(prefix)
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "mongodb_uri": infra.mongodb_uri,
        "mongodb_database": prefix,
        "topic_prefix": prefix,
        "auth_secret": infra.auth_secret,
        "grpc_port": 0,
        "http_port": 0,
    }
    ingest = IngestApp(IngestSettings(**common, pseudonymization_key=secrets.token_hex(32)))
    registry_app = RegistryApp(
        RegistrySettings(**common, artifact_signing_key=SIGNING_KEY, outbox_poll_seconds=0.2)
    )
    await ingest.start()
    await registry_app.start()
    trainer = TrainerApp(
        trainer_settings(
            infra,
            prefix,
            registry_app.grpc_port,
            ingest.grpc_port,
            artifact_signing_key=SIGNING_KEY,
            online_snapshot_rows=100,
            online_refresh_seconds=0.5,
        )
    )
    await trainer.start()
    producer = create_producer(infra.kafka_bootstrap, "trainer-tests", linger_ms=1)
    await producer.start()
    results = Results(infra.kafka_bootstrap, topics.train_results)
    await results.start()
    model_events = Messages(infra.kafka_bootstrap, topics.model_events, ModelEvent)
    await model_events.start()
    token = infra.token(Scope.READ, Scope.WRITE, Scope.INGEST, Scope.PROMOTE)
    registry = RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: token)
    datasets = DatasetClient(f"127.0.0.1:{ingest.grpc_port}", lambda: token)
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ingest.http_port}",
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    try:
        yield Platform(
            infra,
            topics,
            ingest,
            registry_app,
            trainer,
            producer,
            registry,
            datasets,
            http,
            results,
            model_events,
        )
    finally:
        await http.aclose()
        await registry.close()
        await datasets.close()
        await results.stop()
        await model_events.stop()
        await producer.stop()
        await trainer.stop()
        await registry_app.stop()
        await ingest.stop()


@pytest.fixture
def names(unique: str) -> tuple[str, str]:
    """A dataset name and a model name of this test's own."""
    return f"credit-{unique}", f"credit-model-{unique}"
