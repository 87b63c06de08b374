"""Two monitor processes in one consumer group share the work without counting anything
twice, and when one stops (cleanly, on SIGTERM) the other takes over its partitions."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.auth import Scope
from services.common.events import Topics
from services.common.kafka import create_producer
from services.common.localstack import ManagedProcess, free_port, start_process
from services.monitor.join import partition_of
from tests.conftest import Infra
from tests.helpers.monitor import drained, label, prediction, send, stages
from tests.helpers.waiting import wait_for

PARTITIONS = 4
WAIT = 120.0


class Monitor:
    def __init__(self, process: ManagedProcess, port: int, token: str):
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self._headers = {"authorization": f"Bearer {token}"}

    def status(self) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.url}/v1/status", headers=self._headers, timeout=5)
        except httpx.HTTPError:
            return {}
        return dict(response.json()) if response.status_code == 200 else {}

    def samples_partitions(self, samples_topic: str) -> set[int]:
        return set(self.status().get("assignment", {}).get(samples_topic, []))

    def labelled(self) -> dict[str, int]:
        return {
            m["model"]: sum(v["labelled"] for v in m["versions"]) for m in self.status().get("models", [])
        }

    def predicted(self) -> dict[str, int]:
        return {
            m["model"]: sum(v["predictions"] for v in m["versions"]) for m in self.status().get("models", [])
        }


@pytest.fixture
def start_monitor(infra: Infra, tmp_path: Path) -> Iterator[Any]:
    started: list[ManagedProcess] = []

    def start(prefix: str, name: str) -> Monitor:
        port = free_port()
        env = {
            **os.environ,
            **infra.env(prefix, "unused"),
            "MONITOR_HTTP_PORT": str(port),
            "MONITOR_PARTITIONS": str(PARTITIONS),
            "MONITOR_COMMIT_INTERVAL_SECONDS": "0.2",
            # No registry here: nothing to ask for training references.
            "MONITOR_TRAINING_REFERENCE": "false",
            "OMP_NUM_THREADS": "1",
        }
        process = start_process(
            name, [sys.executable, "-m", "services.monitor"], env=env, log_path=tmp_path / f"{name}.log"
        )
        started.append(process)
        # No registry here tells the models' teams: only an administrator sees their status.
        return Monitor(process, port, infra.token(Scope.ADMIN))

    yield start
    for process in started:
        process.stop()


def models_covering_every_partition(count: int) -> list[str]:
    """At least ``count`` model names whose sample partitions cover every partition."""
    names = [f"group-model-{i}" for i in range(count)]
    while {partition_of(name, PARTITIONS) for name in names} != set(range(PARTITIONS)):
        names.append(f"group-model-{len(names)}")
    return names


def pairs(topics: Topics, models: list[str], ids: range, now: float) -> list[Any]:
    records = []
    for model in models:
        records += [
            prediction(topics.predictions, f"{model}-{i}", model, 1, "1", occurred_at=now) for i in ids
        ]
    for model in models:
        records += [label(topics.labels, f"{model}-{i}", 1.0, event_time=now) for i in ids]
    return records


async def test_two_processes_share_the_partitions_and_count_each_sample_once(
    infra: Infra, unique: str, start_monitor: Any
) -> None:
    topics = Topics(unique)
    group = f"{unique}-monitor"
    samples_topic = f"{unique}.monitor.samples"
    models = models_covering_every_partition(8)

    first = start_monitor(unique, "monitor-a")
    second = start_monitor(unique, "monitor-b")

    def split_between_both() -> bool:
        a, b = first.samples_partitions(samples_topic), second.samples_partitions(samples_topic)
        return bool(a) and bool(b) and not a & b and a | b == set(range(PARTITIONS))

    await wait_for(split_between_both, WAIT, "both processes to own some partitions", interval=0.5)

    producer = create_producer(infra.kafka_bootstrap, "group-test")
    await producer.start()
    try:
        now = time.time()
        await send(producer, pairs(topics, models, range(40), now))
        await wait_for(
            lambda: sum(first.labelled().values()) + sum(second.labelled().values()) >= len(models) * 40,
            WAIT,
            "every pair labelled",
            interval=0.5,
        )
        await drained(infra.kafka_bootstrap, stages(topics, group), WAIT)
        a, b = first.labelled(), second.labelled()
        assert a and b, "one process got no model"
        assert not set(a) & set(b), "a model is watched by both processes"
        assert {**a, **b} == dict.fromkeys(models, 40)
        assert {**first.predicted(), **second.predicted()} == dict.fromkeys(models, 40)

        # The second process stops cleanly; the first takes over every partition.
        moved = set(b)
        second.process.signal(signal.SIGTERM)
        assert second.process.popen.wait(60) == 0, second.process.log_tail()
        await wait_for(
            lambda: first.samples_partitions(samples_topic) == set(range(PARTITIONS)),
            WAIT,
            "the survivor to own every partition",
            interval=0.5,
        )
        # New pairs, plus every old prediction and label again (redelivered): the old ones
        # are recognised by the join table the survivor recovered from its changelog.
        await send(
            producer, pairs(topics, models, range(40, 60), now) + pairs(topics, models, range(0, 40), now)
        )
        await drained(infra.kafka_bootstrap, stages(topics, group), WAIT)
        after = first.labelled()
        # Models that moved start afresh on the survivor: only the 20 new samples.
        assert after == {model: 20 if model in moved else 60 for model in models}
    finally:
        await producer.stop()
