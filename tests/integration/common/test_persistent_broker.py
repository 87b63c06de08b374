"""The embedded broker on a persistent store (Tansu's S3 storage on SeaweedFS, see
``start_object_store``): killed with SIGKILL and restarted on the same store, it still has
its records and the consumer groups' committed offsets, so a consumer group resumes where
it committed: nothing lost, nothing read twice. On memory storage the same restart loses
them all (docs/operations.md, the fault table)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.common.events import IncomingRecord
from services.common.kafka import ConsumerLoop, DeadLetter, create_producer, ensure_topics
from services.common.localstack import ManagedProcess, free_port, start_kafka, start_object_store

pytestmark = pytest.mark.faults  # slow: `make test-faults` runs it, and CI

TOPIC = "persisted"
GROUP = "persisted-readers"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start_object_store(port, tmp_path / "store", log_path=tmp_path / "store.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


async def _send(bootstrap: str, values: range) -> None:
    producer = create_producer(bootstrap, "test")
    await producer.start()
    try:
        sent = [await producer.send(TOPIC, str(v).encode(), key=str(v).encode()) for v in values]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _consume_in_group(bootstrap: str, producer: AIOKafkaProducer, count: int) -> list[int]:
    """Run a platform consumer loop in :data:`GROUP` until it handled ``count`` records,
    then stop it (which commits what it handled)."""
    handled: list[int] = []
    enough = asyncio.Event()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        handled.extend(int(r.value or b"-1") for r in records)
        if len(handled) >= count:
            enough.set()
        return []

    loop = ConsumerLoop(
        bootstrap_servers=bootstrap,
        topics=[TOPIC],
        group_id=GROUP,
        handler=handler,
        producer=producer,
        client_id="test",
    )
    await loop.start()
    try:
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        await loop.stop()
    return handled


async def _committed(bootstrap: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(TOPIC, p)) for p in range(2)}
    finally:
        await consumer.stop()


async def test_a_killed_broker_restarted_on_its_store_keeps_records_and_committed_offsets(
    tmp_path: Path, store: str
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker: ManagedProcess = start_kafka(port, log_path=tmp_path / "kafka.log", store=store)
    try:
        await ensure_topics(bootstrap, [TOPIC], partitions=2)
        await _send(bootstrap, range(300))
        producer = create_producer(bootstrap, "test")
        await producer.start()
        try:
            first = await _consume_in_group(bootstrap, producer, 300)
        finally:
            await producer.stop()
        committed = await _committed(bootstrap)
        # The uncommitted tail: published, acknowledged, never read before the kill.
        await _send(bootstrap, range(300, 400))

        broker.kill()
        broker = start_kafka(port, log_path=tmp_path / "kafka.log", store=store)

        assert await _committed(bootstrap) == committed
        assert sum(c or 0 for c in committed.values()) == 300
        producer = create_producer(bootstrap, "test")
        await producer.start()
        try:
            await _send(bootstrap, range(400, 450))
            after = await _consume_in_group(bootstrap, producer, 150)
        finally:
            await producer.stop()
    finally:
        broker.stop()

    assert sorted(first) == list(range(300))
    # Resumed at the committed offsets: the tail and what came after the restart, once each.
    assert sorted(after) == list(range(300, 450))
