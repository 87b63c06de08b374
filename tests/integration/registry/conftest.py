"""One registry per test package, in process on free ports, against the session's real
broker and database (its own database name and topic prefix)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer

from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.events import IncomingRecord, Topics, decode
from services.common.proto.mlops.v1 import events_pb2
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from tests.conftest import Infra

SIGNING_KEY = secrets.token_hex(32)


def settings_for(infra: Infra, name: str, **overrides: object) -> RegistrySettings:
    values: dict[str, object] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "mongodb_uri": infra.mongodb_uri,
        "mongodb_database": name,
        "topic_prefix": name,
        "auth_secret": infra.auth_secret,
        "artifact_signing_key": SIGNING_KEY,
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_port": 0,
        "artifact_chunk_bytes": 64 * 1024,
        "max_artifact_bytes": 4 * 1024 * 1024,
        "outbox_poll_seconds": 0.2,
    }
    values.update(overrides)
    return RegistrySettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="package")
async def registry_app(infra: Infra) -> AsyncIterator[RegistryApp]:
    app = RegistryApp(settings_for(infra, "reg" + uuid.uuid4().hex[:8]))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


ClientFactory = Callable[..., RegistryClient]


@pytest.fixture(scope="package")
async def clients(infra: Infra, registry_app: RegistryApp) -> AsyncIterator[ClientFactory]:
    """``clients(*scopes, subject=...)``: a client with a token for those scopes."""
    opened: list[RegistryClient] = []

    def make(*scopes: Scope | str, subject: str = "tester") -> RegistryClient:
        token = infra.token(*scopes, subject=subject)
        client = RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: token, chunk_bytes=50_000)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()


@pytest.fixture(scope="package")
async def admin(clients: ClientFactory) -> RegistryClient:
    return clients(Scope.ADMIN, subject="admin")


@pytest.fixture
def model_name() -> str:
    return "m-" + uuid.uuid4().hex[:10]


class EventReader:
    """Reads the registry's model events from the start of the topic, without a group."""

    def __init__(self, bootstrap: str, topic: str):
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self.events: list[events_pb2.ModelEvent] = []
        self.ids: list[str] = []

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_for(
        self, predicate: Callable[[list[events_pb2.ModelEvent]], bool], within: float = 15.0
    ) -> list[events_pb2.ModelEvent]:
        async with asyncio.timeout(within):
            while not predicate(self.events):
                batch = await self._consumer.getmany(timeout_ms=100)
                for records in batch.values():
                    for r in records:
                        envelope = decode(
                            IncomingRecord(
                                r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                            ),
                            events_pb2.ModelEvent,
                        )
                        self.ids.append(envelope.id)
                        self.events.append(envelope.message)
        return self.events


@pytest.fixture(scope="package")
async def model_events(infra: Infra, registry_app: RegistryApp) -> AsyncIterator[EventReader]:
    topic = Topics(registry_app.settings.topic_prefix).model_events
    reader = EventReader(infra.kafka_bootstrap, topic)
    # The relay creates the topic when it connects; wait for that before subscribing.
    from services.common.kafka import ensure_topics

    await ensure_topics(infra.kafka_bootstrap, [topic])
    await reader.start()
    yield reader
    await reader.stop()
