"""Services under test, in process: their settings against the session's broker and
database, and starting and stopping them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from services.common.settings import ServiceSettings
from services.registry.settings import RegistrySettings
from tests.conftest import Infra

S = TypeVar("S", bound=ServiceSettings)


class App(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


A = TypeVar("A", bound=App)


def app_settings(settings_class: type[S], infra: Infra, prefix: str, **overrides: Any) -> S:
    """``settings_class`` for an app under test: the session's broker, database and token
    keys, ``prefix`` as its topic prefix and its database's name, and port 0 (a free port)
    for whatever it listens on. ``overrides`` win."""
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": infra.kafka_bootstrap,
        "mongodb_uri": infra.mongodb_uri,
        "mongodb_database": prefix,
        "topic_prefix": prefix,
        **infra.keys.settings(),
    }
    values.update({port: 0 for port in ("grpc_port", "http_port") if port in settings_class.model_fields})
    values.update(overrides)
    return settings_class(**values)


def registry_settings(infra: Infra, prefix: str, **overrides: Any) -> RegistrySettings:
    """A registry under test, issuing tokens with the session's issuer key: its outbox relay
    looks for unsent events every 0.2 s, so tests waiting on model events do not wait for
    the default second."""
    values = {"outbox_poll_seconds": 0.2, "signing_key": infra.keys.issuer.private_pem(), **overrides}
    return app_settings(RegistrySettings, infra, prefix, **values)


@asynccontextmanager
async def started(app: A) -> AsyncIterator[A]:
    """``app`` started, and stopped on the way out."""
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
