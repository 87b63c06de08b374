"""kill -9 of a serving process while Kafka requests flow loses none of them.

Serving runs as its own process (``python -m services.serving``) on a topic prefix of its
own, so only it answers. Requests go in steadily from confluent-kafka; once answers flow,
the process is killed with SIGKILL and a second one is started in the same consumer group.
Every request must end answered or dead-lettered: what the first had not committed, the
second answers (some twice: at least once, de-duplicated by id on the client's side).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
import uuid

import grpc
import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from grpc_health.v1 import health_pb2

from services.common.clients.health import health_stub
from services.common.events import Topics
from services.common.localstack import free_port
from tests.helpers.waiting import eventually
from tests.integration.serving.conftest import Fitted, Stack
from tests.integration.serving.kafka_client import PARTITIONS, headers_of, request_headers, v2_json
from tests.integration.serving.test_process import serving_env

pytestmark = pytest.mark.faults  # slow: `make test-faults` runs it, and CI

REQUESTS = 1200
RATE = 300.0  # requests a second: about four seconds of traffic
MALFORMED_EVERY = 25


class Outcomes:
    """Every answer and dead letter on the prefix's topics, by the CloudEvents id it is for,
    read by a thread from the topics' start."""

    def __init__(self, bootstrap: str, topics: Topics):
        self.answers: dict[str, int] = {}
        self.dead: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "t-" + uuid.uuid4().hex, "fetch.wait.max.ms": 20}
        )
        names = [topics.inference_responses, topics.dlq(topics.inference_requests)]
        self._dlq = names[1]
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in range(PARTITIONS)]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            headers = headers_of(message)
            with self._lock:
                if message.topic() == self._dlq:
                    self.dead.add(headers["ce_id"])
                else:
                    answered = headers["ce_inresponseto"]
                    self.answers[answered] = self.answers.get(answered, 0) + 1
        self._consumer.close()

    def __enter__(self) -> Outcomes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def settled(self) -> set[str]:
        with self._lock:
            return set(self.answers) | self.dead

    async def read(self) -> set[str]:
        """:meth:`settled`, as :func:`eventually` probes it."""
        return self.settled()


def send_steadily(
    bootstrap: str, topic: str, model: str, good: list[str], bad: list[str], rows: list[np.ndarray]
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    started = time.monotonic()
    for i in range(REQUESTS):
        event_id = uuid.uuid4().hex
        malformed = i % MALFORMED_EVERY == 0
        (bad if malformed else good).append(event_id)
        value = b"{not json" if malformed else v2_json(f"r{i}", rows[i % len(rows)])
        producer.produce(topic, value=value, key=f"k{i}".encode(), headers=request_headers(model, event_id))
        producer.poll(0)
        pause = started + (i + 1) / RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the producer, not waiting for an outcome
    assert producer.flush(30) == 0


async def start_serving(env: dict[str, str]) -> asyncio.subprocess.Process:
    """A serving process, returned once its health says SERVING."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.serving", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{env['SERVING_GRPC_PORT']}") as channel:
        watch = health_stub(channel).Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=60)
        async for update in watch:
            if update.status == health_pb2.HealthCheckResponse.SERVING:
                watch.cancel()
                break
    return process


def own_prefix(stack: Stack, prefix: str) -> dict[str, str]:
    env = serving_env(stack, free_port(), free_port())
    env["MLOPS_TOPIC_PREFIX"] = prefix
    env["SERVING_PREDICTION_LOGGING"] = "false"
    return env


async def test_kill_9_while_requests_flow_loses_none(stack: Stack, model_name: str, model_a: Fitted) -> None:
    await stack.register(model_name, model_a)
    topics = Topics("crash" + uuid.uuid4().hex[:8])
    first = await start_serving(own_prefix(stack, topics.prefix))
    second: asyncio.subprocess.Process | None = None
    good: list[str] = []
    bad: list[str] = []
    try:
        with Outcomes(stack.infra.kafka_bootstrap, topics) as outcomes:
            sending = asyncio.create_task(
                asyncio.to_thread(
                    send_steadily,
                    stack.infra.kafka_bootstrap,
                    topics.inference_requests,
                    model_name,
                    good,
                    bad,
                    [model_a.X[i : i + 1] for i in range(20)],
                )
            )
            await eventually(outcomes.read, lambda settled: len(settled) >= REQUESTS // 5, within=60)
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            settled_at_kill = len(outcomes.settled())
            assert not sending.done() or settled_at_kill < REQUESTS, "the kill came after the traffic"
            second = await start_serving(own_prefix(stack, topics.prefix))
            await sending
            await eventually(outcomes.read, lambda settled: settled >= set(good) | set(bad), within=120)
            assert set(bad) <= outcomes.dead and not outcomes.dead & set(good)
            assert set(good) <= set(outcomes.answers)
            duplicates = sum(count - 1 for count in outcomes.answers.values())
            print(f"settled at kill {settled_at_kill}/{REQUESTS}; answered twice after it: {duplicates}")
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
