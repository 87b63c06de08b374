"""The monitor over the real broker, for the test modules of this package that ask for
``running``: one monitor per module (a consumer-group join costs seconds on the embedded
broker), each test with its own model names so that they do not interfere. Its clock is the
wall clock plus an offset a test can move forward.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pydantic import SecretStr

from services.common.events import OutgoingRecord, Topics
from services.common.http import HttpServer
from services.common.kafka import create_producer
from services.monitor.app import MonitorApp
from services.monitor.settings import MonitorSettings
from tests.conftest import Infra
from tests.helpers.monitor import drained, label, prediction, send, stages
from tests.helpers.waiting import wait_for

JOIN_WINDOW = 600.0
WAIT = 120.0
"""Seconds any one wait may take: generous, since the machine is shared; waits end as soon as they can."""
MIN_SAMPLES = 100


class Clock:
    """Wall-clock time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Running:
    app: MonitorApp
    topics: Topics
    producer: AIOKafkaProducer
    clock: Clock
    infra: Infra
    alerts: list[dict[str, Any]]

    def version(self, model: str, version: int) -> dict[str, Any] | None:
        for entry in self.app.monitor.status(self.clock()):
            if entry["model"] == model:
                for v in entry["versions"]:
                    if v["version"] == version:
                        return dict(v)
        return None

    def watched(self, model: str, version: int) -> dict[str, Any]:
        """The status of a version the monitor must be watching."""
        status = self.version(model, version)
        assert status is not None, f"{model} v{version} is not watched"
        return status

    def model(self, model: str) -> dict[str, Any]:
        return next(e for e in self.app.monitor.status(self.clock()) if e["model"] == model)

    def labelled(self, model: str, version: int) -> int:
        status = self.version(model, version)
        return int(status["labelled"]) if status else 0

    def predicted(self, model: str, version: int) -> int:
        status = self.version(model, version)
        return int(status["predictions"]) if status else 0

    async def drained(self) -> None:
        """Wait until the monitor has handled (and committed) everything sent so far."""
        await drained(
            self.infra.kafka_bootstrap, stages(self.topics, self.app.settings.consumer_group()), WAIT
        )

    async def labelled_pairs(self, model: str, ids: list[str], wrong: Collection[str] = ()) -> None:
        """Predictions of ``model`` v1 for ``ids`` and their labels, once all are labelled."""
        now = time.time()
        await send(
            self.producer,
            [prediction(self.topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
            + [label(self.topics.labels, i, 0.0 if i in wrong else 1.0, event_time=now) for i in ids],
        )
        await wait_for(lambda: self.labelled(model, 1) == len(ids), WAIT, f"{model} labelled")


def shadow_answers(
    topics: Topics, model: str, ids: list[str], wrong: int, now: float
) -> list[OutgoingRecord]:
    """Version 2's shadow answers to the requests ``ids``: "0" for the first ``wrong`` of them
    (wrong against a label of 1), "1" for the rest."""
    return [
        prediction(
            topics.predictions,
            i,
            model,
            2,
            "0" if n < wrong else "1",
            occurred_at=now,
            route="shadow",
            shadow=True,
        )
        for n, i in enumerate(ids)
    ]


@pytest.fixture(scope="module")
async def running(infra: Infra) -> AsyncIterator[Running]:
    topics = Topics(prefix=f"mon{random.randrange(16**8):08x}")
    # A webhook receiver on loopback (allowed here explicitly; refused by default).
    alerts: list[dict[str, Any]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(body: dict[str, Any]) -> dict[str, str]:
        alerts.append(body)
        return {"status": "ok"}

    webhook = HttpServer(receiver, "127.0.0.1", 0)
    await webhook.start()
    settings = MonitorSettings(
        MLOPS_KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
        MLOPS_TOPIC_PREFIX=topics.prefix,
        **infra.keys.settings(),
        http_port=0,
        join_window_seconds=JOIN_WINDOW,
        sweep_interval_seconds=0.2,
        cooldown_seconds=3600,
        retrain_min_samples=MIN_SAMPLES,
        commit_interval_seconds=0.2,
        alert_webhook_url=SecretStr(f"http://127.0.0.1:{webhook.port}/hook"),
        alert_webhook_schemes=["http"],
        alert_webhook_allow_private=True,
        # No registry in this suite (test_training_reference.py has one): data drift is
        # measured against live traffic, and nothing calls a registry on the default port.
        training_reference=False,
    )
    clock = Clock()
    app = MonitorApp(settings, clock=clock)
    producer = create_producer(infra.kafka_bootstrap, "monitor-test")
    await producer.start()
    await app.start()
    try:
        yield Running(app, topics, producer, clock, infra, alerts)
    finally:
        await app.stop()
        await producer.stop()
        await webhook.stop()
