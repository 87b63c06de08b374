"""The shared consumer loop against the real broker: commit after effect, dead letters
for poison records, retries for transient failures, and the non-blocking publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.events import EnvelopeError, IncomingRecord, Topics, decode, encode
from services.common.kafka import (
    DLQ_ERROR_CLASS,
    DLQ_ORIGINAL_OFFSET,
    ConsumerLoop,
    DeadLetter,
    TransientError,
    create_producer,
    ensure_topics,
    publish,
)
from services.common.proto.mlops.v1 import events_pb2
from tests.conftest import Infra


async def read_all(bootstrap: str, topic: str, count: int, within: float = 20.0) -> list[IncomingRecord]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[IncomingRecord] = []
    try:
        async with asyncio.timeout(within):
            while len(out) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out += [
                        IncomingRecord(
                            r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                        )
                        for r in records
                    ]
    finally:
        await consumer.stop()
    return out


async def test_poison_records_go_to_dlq_and_the_rest_is_handled_once(infra: Infra, topics: Topics) -> None:
    source = topics.labels
    await ensure_topics(infra.kafka_bootstrap, [source, Topics.dlq(source)], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test")
    await producer.start()
    handled: list[str] = []
    failures = {"left": 2}
    all_handled = asyncio.Event()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        if failures["left"]:
            failures["left"] -= 1
            raise TransientError("database away")
        dead = []
        for record in records:
            try:
                envelope = decode(record, events_pb2.LabelRecord)
            except EnvelopeError as exc:
                dead.append(DeadLetter(record, exc.error_class, str(exc)))
                continue
            handled.append(envelope.message.event_id)
        if len(handled) == 3:
            all_handled.set()
        return dead

    try:
        good = [
            encode(source, events_pb2.LabelRecord(event_id=f"e{i}"), source="/test", key=f"e{i}")
            for i in range(3)
        ]
        await publish(producer, [good[0]])
        await producer.send_and_wait(source, b"\xff\xfe not an envelope", key=b"bad")
        await publish(producer, good[1:])
        loop = ConsumerLoop(
            bootstrap_servers=infra.kafka_bootstrap,
            topics=[source],
            group_id=f"{topics.prefix}-g",
            handler=handler,
            producer=producer,
            client_id="test",
            max_retry_delay=0.2,
        )
        await loop.start()
        dlq = await read_all(infra.kafka_bootstrap, Topics.dlq(source), 1)
        await asyncio.wait_for(all_handled.wait(), 20)
        await loop.stop()
    finally:
        await producer.stop()

    assert handled == ["e0", "e1", "e2"]
    headers = dict(dlq[0].headers)
    assert headers[DLQ_ERROR_CLASS] == b"not_cloudevent"
    assert headers[DLQ_ORIGINAL_OFFSET] == b"1"
    assert dlq[0].value == b"\xff\xfe not an envelope"

    # Everything was committed, the poison record included.
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap, group_id=f"{topics.prefix}-g")
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(source, 0))
    finally:
        await consumer.stop()
    assert committed == 4
