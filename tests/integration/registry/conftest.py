"""One registry per test package, in process on free ports, against the session's real
broker and database (its own database name and topic prefix)."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.kafka import ensure_topics
from services.common.proto.mlops.v1 import events_pb2
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from tests.conftest import Infra
from tests.helpers.apps import registry_settings, started
from tests.helpers.kafka import TopicReader

SIGNING_KEY = secrets.token_hex(32)
ARTIFACT_KEY_ID = "test-2026"
ARTIFACT_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
ARTIFACT_KEYS = json.dumps({ARTIFACT_KEY_ID: ARTIFACT_KEY})
"""Every registry under test stores its artifacts encrypted, as a production one should."""

ModelEvents = TopicReader[events_pb2.ModelEvent]
"""The registry's model events as the ``model_events`` fixture reads them."""


def settings_for(infra: Infra, name: str, **overrides: object) -> RegistrySettings:
    """A registry on its own database and topic prefix ``name``, with small artifact chunks
    and limits so the tests cross them cheaply, and artifacts encrypted at rest."""
    values: dict[str, object] = {
        "artifact_signing_key": SIGNING_KEY,
        "artifact_keys": ARTIFACT_KEYS,
        "artifact_chunk_bytes": 64 * 1024,
        "max_artifact_bytes": 4 * 1024 * 1024,
    }
    values.update(overrides)
    return registry_settings(infra, name, **values)


@pytest.fixture(scope="package")
async def registry_app(infra: Infra) -> AsyncIterator[RegistryApp]:
    async with started(RegistryApp(settings_for(infra, "reg" + uuid.uuid4().hex[:8]))) as app:
        yield app


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


@pytest.fixture(scope="package")
async def model_events(infra: Infra, registry_app: RegistryApp) -> AsyncIterator[ModelEvents]:
    """The registry's model events, from the start of its topic."""
    topic = Topics(registry_app.settings.topic_prefix).model_events
    # The relay creates the topic when it connects; make sure it is there before subscribing.
    await ensure_topics(infra.kafka_bootstrap, [topic])
    async with TopicReader(infra.kafka_bootstrap, topic, events_pb2.ModelEvent, within=15.0) as reader:
        yield reader


@pytest.fixture(scope="module")
async def http(registry_app: RegistryApp, infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    """The registry's REST API as an admin (module-scoped: one connection pool per module)."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{registry_app.http_port}",
        headers={"Authorization": f"Bearer {infra.token(Scope.ADMIN, subject='web-admin')}"},
        timeout=30,
    ) as client:
        yield client
