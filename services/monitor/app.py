"""Composition root: the topics, the stream application around the drift monitor, and HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.common.auth import Scope, ServiceCredentials, TokenVerifier
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.http import HttpServer
from services.common.kafka import ensure_topics
from services.common.logging import get_logger
from services.monitor import http_api
from services.monitor.alerts import WebhookAlerter
from services.monitor.drift import DriftMonitor
from services.monitor.profiles import ProfileSource
from services.monitor.settings import MonitorSettings
from services.monitor.stream import MonitorStreams
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
        self._http: HttpServer | None = None
        self._sampler: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.streams is not None and self.streams.running

    async def start(self) -> None:
        settings = self.settings
        topics = Topics(settings.topic_prefix)
        if settings.alert_webhook_url is not None:
            self.alerter = WebhookAlerter(
                settings.alert_webhook_url.get_secret_value(),
                settings.alert_webhook_schemes,
                allow_private=settings.alert_webhook_allow_private,
            )
            await self.alerter.start()
        if settings.training_reference:
            credentials = ServiceCredentials(settings.auth_secret.get_secret_value(), "monitor", [Scope.READ])
            registry = RegistryClient(
                settings.registry_address, credentials, timeout=settings.reference_timeout_seconds
            )
            self.profiles = ProfileSource(registry, settings.reference_retry_seconds)
        self.streams = MonitorStreams(
            settings,
            self.monitor,
            clock=self._clock,
            alerter=self.alerter,
            profiles=self.profiles,
            timeline=self.timeline,
        )
        consumed = [topics.predictions, topics.labels, topics.model_events]
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [*consumed, *(Topics.dlq(t) for t in consumed), topics.drift, topics.train_requests],
        )
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [self.streams.join_topic, self.streams.samples_topic],
            partitions=settings.partitions,
        )
        verifier = TokenVerifier(settings.auth_secret.get_secret_value())
        streams = self.streams
        http_app = http_api.create_http_app(
            self.monitor,
            self.timeline,
            verifier,
            ready=lambda: self.ready,
            assignment=lambda: streams.assignment,
            version=settings.code_version,
        )
        self._http = HttpServer(http_app, settings.host, settings.http_port)
        await self._http.start()
        self.http_port = self._http.port
        await self.streams.start()
        self._sampler = asyncio.create_task(self._sample_timeline(), name="timeline")
        log.info("monitor_started", http_port=self.http_port, group=settings.consumer_group())

    async def stop(self) -> None:
        """Stop consuming (committing what was handled), then stop serving HTTP."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self.streams is not None:
            await self.streams.stop()
        if self._http is not None:
            await self._http.stop()
        if self.alerter is not None:
            await self.alerter.stop()
        if self.profiles is not None:
            await self.profiles.close()
        log.info("monitor_stopped")

    async def _sample_timeline(self) -> None:
        """A point per watched version every ``timeline_interval_seconds``."""
        while True:
            self.timeline.sample(self.monitor.status(), self._clock())
            await asyncio.sleep(self.settings.timeline_interval_seconds)


async def run(settings: MonitorSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    app = MonitorApp(settings)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()
