"""One ingest service for the package's in-process tests, on the session's real broker and
database: a consumer-group join costs seconds, so the tests share it and isolate
themselves by dataset name instead. A tap reads every output topic as it fills."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.events import IncomingRecord, Topics
from services.common.kafka import create_producer
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, DerivedFeature, FieldSpec, FieldType
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from tests.conftest import Infra

PSEUDONYMIZATION_KEY = "integration-test-pseudonymization-key-0123456789"


class Tap:
    """Reads the given topics from the start, continuously, so tests can wait on what
    arrives instead of sleeping."""

    def __init__(self, bootstrap: str, topics: list[str]):
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        self.records: dict[str, list[IncomingRecord]] = {topic: [] for topic in topics}
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
            if not batches:
                continue
            async with self._changed:
                for records in batches.values():
                    for r in records:
                        self.records[r.topic].append(
                            IncomingRecord(
                                r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                            )
                        )
                self._changed.notify_all()

    async def wait_for(
        self, topic: str, match: Callable[[IncomingRecord], bool], count: int, within: float = 20.0
    ) -> list[IncomingRecord]:
        """The first ``count`` records of ``topic`` that ``match``, once that many have arrived."""

        def found() -> list[IncomingRecord]:
            return [r for r in self.records[topic] if match(r)]

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count)
        return found()


@dataclass
class Ingest:
    """The running service and what tests drive it with."""

    app: IngestApp
    infra: Infra
    topics: Topics
    producer: AIOKafkaProducer
    datasets: DatasetClient
    http: httpx.AsyncClient
    tap: Tap
    settings: IngestSettings
    created: list[str] = field(default_factory=list)

    async def send_json(self, events: list[Any], dataset: str | None = None) -> None:
        """Send events to the raw topic as plain JSON (``dataset`` added when given), keyed
        by event id as producers do, so the copies of one event keep their order."""
        futures = []
        for item in events:
            body = {"dataset": dataset, **item} if dataset is not None and isinstance(item, dict) else item
            value = body if isinstance(body, bytes) else json.dumps(body).encode()
            key = str(body.get("event_id", "")).encode() if isinstance(body, dict) else None
            futures.append(await self.producer.send(self.topics.raw_events, value, key=key or None))
        await asyncio.gather(*futures)

    def dead_letters(self, dataset: str) -> Callable[[IncomingRecord], bool]:
        needle = f'"dataset": "{dataset}"'.encode()
        return lambda r: needle in (r.value or b"")


def orders_schema(name: str, **overrides: Any) -> DatasetSchema:
    """A small dataset: id, private customer, time, amount in [0, 1000], items, country, label."""
    schema = DatasetSchema(
        name=name,
        event_id_field="event_id",
        entity_id_field="customer",
        timestamp_field="ts",
        label_field="label",
        fields=[
            FieldSpec(name="event_id", type=FieldType.FIELD_TYPE_TEXT, required=True),
            FieldSpec(name="customer", type=FieldType.FIELD_TYPE_TEXT, required=True, private=True),
            FieldSpec(name="ts", type=FieldType.FIELD_TYPE_TIMESTAMP, required=True),
            FieldSpec(
                name="amount",
                type=FieldType.FIELD_TYPE_NUMBER,
                required=True,
                has_min=True,
                min=0,
                has_max=True,
                max=1000,
            ),
            FieldSpec(name="items", type=FieldType.FIELD_TYPE_NUMBER),
            FieldSpec(name="country", type=FieldType.FIELD_TYPE_CATEGORY, allowed_values=["FR", "DE", "IT"]),
            FieldSpec(name="label", type=FieldType.FIELD_TYPE_CATEGORY),
        ],
        derived=[
            DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"]),
            DerivedFeature(name="per_item", function="ratio", inputs=["amount", "items"]),
        ],
    )
    for key, value in overrides.items():
        setattr(schema, key, value)
    return schema


def ingest_settings(infra: Infra, prefix: str, database: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "mongodb_uri": infra.mongodb_uri,
        "mongodb_database": database,
        "topic_prefix": prefix,
        "auth_secret": infra.auth_secret,
        "grpc_port": 0,
        "http_port": 0,
        "pseudonymization_key": PSEUDONYMIZATION_KEY,
        "schema_cache_seconds": 0.5,
        # Small bulk inserts, so batches span several and their pipelining is exercised.
        "store_batch_size": 4,
    }
    values.update(overrides)
    return IngestSettings(**values)


@pytest.fixture(scope="package")
async def ingest(infra: Infra) -> AsyncIterator[Ingest]:
    prefix = "ti" + uuid.uuid4().hex[:8]
    topics = Topics(prefix)
    settings = ingest_settings(infra, prefix, prefix)
    app = IngestApp(settings)
    await app.start()
    assert app.consumer is not None
    producer = create_producer(infra.kafka_bootstrap, "test-producer", linger_ms=1)
    await producer.start()
    tap = Tap(infra.kafka_bootstrap, [topics.features, topics.labels, Topics.dlq(topics.raw_events)])
    await tap.start()
    token = infra.token(Scope.READ, Scope.WRITE)
    datasets = DatasetClient(f"127.0.0.1:{app.grpc_port}", lambda: token)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
    try:
        await asyncio.wait_for(app.consumer.loop.assigned.wait(), 30)
        yield Ingest(app, infra, topics, producer, datasets, http, tap, settings)
    finally:
        await http.aclose()
        await datasets.close()
        await tap.stop()
        await producer.stop()
        await app.stop()


@pytest.fixture
def dataset(unique: str) -> str:
    return f"orders-{unique}"
