"""Composition root: the clients of the platform's APIs, the jobs follower, and HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import httpx

from services.common.events import Topics
from services.common.http import HttpServer
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import Parts, run_until
from services.common.logging import get_logger
from services.common.tls import client_tls, server_tls
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
        self._parts = Parts("console")
        self._serving = False

    async def start(self) -> None:
        """Start every part in order; if one fails, the ones before it are stopped again."""
        async with self._parts.starting():
            await self._start()
        log.info("console_started", http_port=self.http_port)

    async def _start(self) -> None:
        settings, parts = self.settings, self._parts
        if settings.session_key is None:
            log.warning("console_session_key_unset", effect="sessions end when this process stops")
            key = secrets.token_bytes(32)
        else:
            key = settings.session_key.get_secret_value().encode()
        tls = client_tls(settings)
        registry = Registry(
            settings.registry_address, current_token.get, timeout=settings.request_timeout_seconds, tls=tls
        )
        parts.on_stop("registry_client", registry.close)
        client = await parts.enter(
            "http_client",
            httpx.AsyncClient(
                timeout=settings.request_timeout_seconds,
                follow_redirects=False,
                verify=tls.ssl_context() if tls is not None else True,
            ),
        )
        jobs = Jobs(settings.jobs_kept)
        follower = await parts.start(
            "jobs",
            JobFollower(
                settings.kafka_bootstrap_servers,
                Topics(settings.topic_prefix),
                jobs,
                security=KafkaSecurity.from_settings(settings),
            ),
        )
        self.console = web.Console(
            settings=settings,
            codec=SessionCodec(key, settings.session_ttl_seconds),
            registry=registry,
            monitors=Monitors(client, settings.monitor_urls),
            ingest=HttpApi(client, settings.ingest_url, "ingest"),
            jobs=jobs,
            follower=follower,
            clock=self._clock,
        )
        app = web.create_http_app(self.console, ready=lambda: self._serving)
        http_server = HttpServer(
            app,
            settings.host,
            settings.http_port,
            tls=server_tls(settings),
            reload_seconds=settings.tls_reload_seconds,
        )
        self.http_port = (await parts.start("http", http_server)).port
        self._serving = True
        parts.on_stop("readiness", self._not_ready)

    def _not_ready(self) -> None:
        self._serving = False

    async def stop(self) -> None:
        """Stop serving HTTP, then the jobs follower, then the clients."""
        await self._parts.stop()
        log.info("console_stopped")


async def run(settings: ConsoleSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    await run_until(ConsoleApp(settings), stop)
