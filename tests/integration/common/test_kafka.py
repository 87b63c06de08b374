"""The shared consumer loop against the real broker: commit after effect, dead letters
for poison records, retries for transient failures, and the non-blocking publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
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
from tests.helpers.kafka import TopicReader, read_records


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
        dlq = await read_records(infra.kafka_bootstrap, Topics.dlq(source), 1)
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


async def test_a_consumed_record_keeps_its_key_headers_and_timestamp(infra: Infra, topics: Topics) -> None:
    topic = topics.labels
    await ensure_topics(infra.kafka_bootstrap, [topic], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test")
    await producer.start()
    sent = encode(
        topic, events_pb2.LabelRecord(event_id="e1"), source="/test", key="e1", headers=[("empty", b"")]
    )
    try:
        await publish(producer, [sent])
        await producer.send_and_wait(topic, b"not an envelope", timestamp_ms=1_700_000_000_000)
    finally:
        await producer.stop()

    labelled, poison = await read_records(infra.kafka_bootstrap, topic, 2)

    assert (labelled.topic, labelled.partition, labelled.offset, labelled.key) == (topic, 0, 0, b"e1")
    assert labelled.headers == tuple(sent.headers)
    assert decode(labelled, events_pb2.LabelRecord).message.event_id == "e1"
    assert (poison.offset, poison.key, poison.value, poison.headers) == (1, None, b"not an envelope", ())
    assert poison.timestamp_ms == 1_700_000_000_000
    # A reader of messages stops at a record that is not one, rather than waiting it out.
    async with TopicReader(infra.kafka_bootstrap, topic, events_pb2.LabelRecord) as reader:
        with pytest.raises(EnvelopeError, match="missing CloudEvents header"):
            await reader.wait_for(lambda label: label.event_id == "never sent")
    assert [label.event_id for label in reader.received] == ["e1"]
