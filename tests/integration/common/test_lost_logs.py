"""A log that moves behind its consumers, on the real broker: a topic deleted and created
again leaves every position past the new end, as a broker that restarted without its
records does. Consumers resume from a defined point and say so once; a consumer that does
not consume makes its service not ready, saying which and why."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from structlog.testing import capture_logs

from services.common.events import IncomingRecord, OutgoingRecord, Topics, encode
from services.common.http import HttpServer, create_app
from services.common.kafka import (
    ConsumerLoop,
    DeadLetter,
    TailReader,
    TransientError,
    create_producer,
    ensure_topics,
    publish,
)
from services.common.progress import Resume
from services.common.proto.mlops.v1 import events_pb2
from tests.conftest import Infra
from tests.helpers.keys import KEYS
from tests.helpers.waiting import wait_for


def labels(topic: str, *ids: str) -> list[OutgoingRecord]:
    return [encode(topic, events_pb2.LabelRecord(event_id=i), source="/test", key=i) for i in ids]


async def recreate(bootstrap: str, topic: str) -> None:
    """Delete ``topic`` and create it again, empty (as a broker restart without its records)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-recreate")
    await admin.start()
    try:
        await admin.delete_topics([topic])
        await wait_for(lambda: _absent(admin, topic), 20, f"{topic} deleted")
    finally:
        await admin.close()
    await ensure_topics(bootstrap, [topic], partitions=1)


async def _absent(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic not in await admin.list_topics()


async def test_a_tail_reader_whose_log_moved_behind_it_resumes_at_the_new_beginning(
    infra: Infra, topics: Topics
) -> None:
    topic = topics.model_events
    await ensure_topics(infra.kafka_bootstrap, [topic], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test-lost")
    await producer.start()
    reader = TailReader(infra.kafka_bootstrap, [topic], client_id="test-tail", resume=Resume.BEGINNING)
    try:
        await publish(producer, labels(topic, *(f"old{i}" for i in range(6))))
        await reader.start()
        # The embedded broker may place "the end" before the last records of a batch: read
        # up to the real end first.
        while await reader.read(timeout_ms=500):
            pass
        await recreate(infra.kafka_bootstrap, topic)
        await publish(producer, labels(topic, "new0", "new1"))
        seen: list[IncomingRecord] = []
        with capture_logs() as logs:
            async with asyncio.timeout(60):
                while len(seen) < 2:
                    seen += await reader.read(timeout_ms=200)
    finally:
        await reader.stop()
        await producer.stop()
    assert [r.key for r in seen] == [b"new0", b"new1"]
    (moved,) = [e for e in logs if e["event"] == "log_moved_behind"]
    assert moved["consumer"] == "test-tail" and moved["resume"] == "beginning"
    assert moved["partitions"] == [f"{topic}[0] at 6, log end 2, resumed at 0"]


async def test_a_consumer_group_whose_log_moved_behind_it_handles_the_new_records(
    infra: Infra, topics: Topics
) -> None:
    source = topics.labels
    await ensure_topics(infra.kafka_bootstrap, [source, Topics.dlq(source)], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test-lost")
    await producer.start()
    handled: list[bytes | None] = []

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        handled.extend(r.key for r in records)
        return []

    loop = ConsumerLoop(
        bootstrap_servers=infra.kafka_bootstrap,
        topics=[source],
        group_id=f"{topics.prefix}.lost",
        handler=handler,
        producer=producer,
        client_id="test-lost",
    )
    try:
        await publish(producer, labels(source, *(f"old{i}" for i in range(6))))
        await loop.start()
        await wait_for(lambda: len(handled) == 6, 60, "the old records handled")
        await recreate(infra.kafka_bootstrap, source)
        await publish(producer, labels(source, "new0", "new1"))
        await wait_for(lambda: handled[6:] == [b"new0", b"new1"], 60, "the new records handled")
        assert loop.problem() is None
    finally:
        await loop.stop()
        await producer.stop()


async def test_a_consumer_that_keeps_retrying_says_so_and_its_readiness_names_it(
    infra: Infra, topics: Topics
) -> None:
    source = topics.labels
    await ensure_topics(infra.kafka_bootstrap, [source, Topics.dlq(source)], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test-stuck")
    await producer.start()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        raise TransientError("database away")

    loop = ConsumerLoop(
        bootstrap_servers=infra.kafka_bootstrap,
        topics=[source],
        group_id=f"{topics.prefix}.stuck",
        handler=handler,
        producer=producer,
        client_id="test-stuck",
        max_retry_delay=0.2,
        stall_seconds=1.0,
    )

    def problems() -> list[str]:
        problem = loop.problem()
        return [f"labels consumer: {problem}"] if problem else []

    app = create_app(
        "stuck", "test", verifier=KEYS.verifier(), ready=lambda: not problems(), problems=problems
    )
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        await publish(producer, labels(source, "e1"))
        await loop.start()
        await wait_for(lambda: "retrying" in (loop.problem() or ""), 60, "the stall reported")
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{server.port}/health/ready")
    finally:
        await server.stop()
        await loop.stop()
        await producer.stop()
    assert answer.status_code == 503
    (problem,) = answer.json()["problems"]
    assert problem.startswith("labels consumer: retrying a batch for ") and "database away" in problem
