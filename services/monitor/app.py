"""Composition root: the topics, the stream application around the drift monitor, and HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.common.access import PlatformAccess
from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.heap import freeze_startup_heap
from services.common.http import HttpServer
from services.common.lifecycle import Parts, cancel, run_until
from services.common.logging import get_logger
from services.common.tls import client_tls, server_tls
from services.monitor import http_api
from services.monitor.alerts import WebhookAlerter
from services.monitor.drift import DriftMonitor
from services.monitor.profiles import ProfileSource
from services.monitor.settings import MonitorSettings
from services.monitor.stream import MonitorStreams
from services.monitor.teams import ModelTeams
from services.monitor.timeline import Timeline

log = get_logger(__name__)


class MonitorApp:
    """The monitor service. After :meth:`start`, ``http_port`` is bound.

    ``clock`` (epoch seconds) paces join expiry and cooldowns; tests move it forward.
    """

    def __init__(self, settings: MonitorSettings, clock: Callable[[], float] = time.time):
        self.settings = settings
        self._clock = clock
        self.http_port = 0
        self.monitor = DriftMonitor(settings.policy())
        self.timeline = Timeline(settings.timeline_points, settings.timeline_events)
        self.streams: MonitorStreams | None = None
        self.alerter: WebhookAlerter | None = None
        self.profiles: ProfileSource | None = None
        self._parts = Parts("monitor")

    @property
    def ready(self) -> bool:
        return self.streams is not None and not self.problems()

    def problems(self) -> list[str]:
        """What keeps the monitor from doing its job: its streams, if they are not consuming."""
        problem = self.streams.problem() if self.streams is not None else "not started"
        return [f"streams: {problem}"] if problem else []

    async def start(self) -> None:
        """Start every part in order; if one fails, the ones before it are stopped again."""
        async with self._parts.starting():
            await self._start()
        log.info("monitor_started", http_port=self.http_port, group=self.settings.consumer_group())

    async def _start(self) -> None:
        settings, parts = self.settings, self._parts
        access = PlatformAccess(settings, "monitor")
        registry = RegistryClient(
            settings.registry_address,
            access.credentials(Scope.READ),
            timeout=settings.reference_timeout_seconds,
            tls=client_tls(settings),
        )
        parts.on_stop("registry_client", registry.close)
        if settings.alert_webhook_url is not None:
            self.alerter = await parts.start(
                "alerter",
                WebhookAlerter(
                    settings.alert_webhook_url.get_secret_value(),
                    settings.alert_webhook_schemes,
                    allow_private=settings.alert_webhook_allow_private,
                ),
            )
        if settings.training_reference:
            self.profiles = ProfileSource(registry, settings.reference_retry_seconds)
        streams = MonitorStreams(
            settings,
            self.monitor,
            clock=self._clock,
            alerter=self.alerter,
            profiles=self.profiles,
            timeline=self.timeline,
        )
        await streams.ensure_topics()
        verifier = access.verifier
        http_app = http_api.create_http_app(
            self.monitor,
            self.timeline,
            verifier,
            ModelTeams(registry),
            ready=lambda: self.ready,
            problems=self.problems,
            assignment=lambda: streams.assignment,
            version=settings.code_version,
            clock=self._clock,
        )
        self.http_port = (
            await parts.start(
                "http",
                HttpServer(
                    http_app,
                    settings.host,
                    settings.http_port,
                    tls=server_tls(settings),
                    reload_seconds=settings.tls_reload_seconds,
                ),
            )
        ).port
        # Consuming stops first: what was handled is committed while HTTP still answers.
        self.streams = await parts.start("streams", streams)
        sampler = asyncio.create_task(self._sample_timeline(), name="timeline")
        parts.on_stop("timeline", lambda: cancel(sampler))
        # Last to start, first to stop: a failed start leaves no poller behind.
        parts.on_stop("revocations", access.stop)
        await access.start()

    async def stop(self) -> None:
        """Stop consuming (committing what was handled), then stop serving HTTP."""
        await self._parts.stop()
        log.info("monitor_stopped")

    async def _sample_timeline(self) -> None:
        """A point per watched version every ``timeline_interval_seconds``."""
        while True:
            now = self._clock()
            self.timeline.sample(self.monitor.status(now), now)
            await asyncio.sleep(self.settings.timeline_interval_seconds)


async def run(settings: MonitorSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. Once started, the process's heap is frozen (the monitor's
    work is allocation-heavy; see services/common/heap.py): done here, not in
    :class:`MonitorApp`, which tests start inside their own process."""

    def started() -> None:
        log.info("heap_frozen", objects=freeze_startup_heap())

    await run_until(MonitorApp(settings), stop, started=started)
