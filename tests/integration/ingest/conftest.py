"""One ingest service for the package's in-process tests, on the session's real broker and
database: a consumer-group join costs seconds, so the tests share it and isolate
themselves by dataset name instead. Readers follow every output topic as it fills."""

from __future__ import annotations

import asyncio
import json
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
from services.common.events import IncomingRecord, Topics
from services.common.kafka import create_producer
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from tests.conftest import Infra
from tests.helpers.apps import app_settings, started
from tests.helpers.kafka import TopicReader

PSEUDONYMIZATION_KEY = "integration-test-pseudonymization-key-0123456789"


@dataclass
class Ingest:
    """The running service and what tests drive it with."""

    app: IngestApp
    infra: Infra
    topics: Topics
    producer: AIOKafkaProducer
    datasets: DatasetClient
    http: httpx.AsyncClient
    features: TopicReader[IncomingRecord]
    labels: TopicReader[IncomingRecord]
    raw_dead_letters: TopicReader[IncomingRecord]
    settings: IngestSettings

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


@pytest.fixture(scope="package")
async def ingest(infra: Infra) -> AsyncIterator[Ingest]:
    prefix = "ti" + uuid.uuid4().hex[:8]
    topics = Topics(prefix)
    settings = app_settings(
        IngestSettings,
        infra,
        prefix,
        pseudonymization_key=PSEUDONYMIZATION_KEY,
        schema_cache_seconds=0.5,
        # Small bulk inserts, so batches span several and their pipelining is exercised.
        store_batch_size=4,
    )
    token = infra.token(Scope.READ, Scope.WRITE)
    async with AsyncExitStack() as running:
        app = await running.enter_async_context(started(IngestApp(settings)))
        assert app.consumer is not None
        producer = create_producer(infra.kafka_bootstrap, "test-producer", linger_ms=1)
        await producer.start()
        running.push_async_callback(producer.stop)
        features, labels, raw_dead_letters = [
            await running.enter_async_context(TopicReader(infra.kafka_bootstrap, topic))
            for topic in (topics.features, topics.labels, Topics.dlq(topics.raw_events))
        ]
        datasets = await running.enter_async_context(
            DatasetClient(f"127.0.0.1:{app.grpc_port}", lambda: token)
        )
        http = await running.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
        )
        await asyncio.wait_for(app.consumer.loop.assigned.wait(), 30)
        yield Ingest(
            app, infra, topics, producer, datasets, http, features, labels, raw_dead_letters, settings
        )


@pytest.fixture
def dataset(unique: str) -> str:
    return f"orders-{unique}"
