"""Composition root: the clients of the platform's APIs, the jobs follower, and HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import httpx

from services.common.events import Topics
from services.common.http import HttpServer
from services.common.logging import get_logger
from services.console import web
from services.console.backends import HttpApi, Monitors, Registry, current_token
from services.console.follower import JobFollower
from services.console.jobs import Jobs
from services.console.session import SessionCodec
from services.console.settings import ConsoleSettings

log = get_logger(__name__)


class ConsoleApp:
    """The console. After :meth:`start`, ``http_port`` is bound.

    ``clock`` (epoch seconds) ages sessions and places quality buckets; tests move it.
    """

    def __init__(self, settings: ConsoleSettings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self._clock = clock
        self.http_port = 0
        self.console: web.Console | None = None
        self._http: HttpServer | None = None
        self._client: httpx.AsyncClient | None = None
        self._started = False

    async def start(self) -> None:
        settings = self.settings
        if settings.session_key is None:
            log.warning("console_session_key_unset", effect="sessions end when this process stops")
            key = secrets.token_bytes(32)
        else:
            key = settings.session_key.get_secret_value().encode()
        registry = Registry(
            settings.registry_address, current_token.get, timeout=settings.request_timeout_seconds
        )
        self._client = httpx.AsyncClient(timeout=settings.request_timeout_seconds, follow_redirects=False)
        jobs = Jobs(settings.jobs_kept)
        follower = JobFollower(settings.kafka_bootstrap_servers, Topics(settings.topic_prefix), jobs)
        self.console = web.Console(
            settings=settings,
            codec=SessionCodec(key, settings.session_ttl_seconds),
            registry=registry,
            monitors=Monitors(self._client, settings.monitor_urls),
            ingest=HttpApi(self._client, settings.ingest_url, "ingest"),
            jobs=jobs,
            follower=follower,
            clock=self._clock,
        )
        await follower.start()
        self._http = HttpServer(
            web.create_http_app(self.console, ready=lambda: self._started), settings.host, settings.http_port
        )
        await self._http.start()
        self.http_port = self._http.port
        self._started = True
        log.info("console_started", http_port=self.http_port)

    async def stop(self) -> None:
        """Stop serving HTTP, then the jobs follower, then the clients."""
        self._started = False
        if self._http is not None:
            await self._http.stop()
        if self.console is not None:
            await self.console.follower.stop()
            await self.console.registry.close()
        if self._client is not None:
            await self._client.aclose()
        log.info("console_stopped")


async def run(settings: ConsoleSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    app = ConsoleApp(settings)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()
