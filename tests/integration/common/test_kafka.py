"""The shared consumer loop against the real broker: commit after effect, dead letters
for poison records and for records that break the handler, retries for transient failures,
and what a stop in the middle of a batch leaves to the next member of the group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.common.events import EnvelopeError, IncomingRecord, OutgoingRecord, Topics, decode, encode
from services.common.kafka import (
    DLQ_ERROR_CLASS,
    DLQ_ERROR_MESSAGE,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
    BatchHandler,
    ConsumerLoop,
    DeadLetter,
    TransientError,
    create_producer,
    ensure_topics,
    publish,
)
from services.common.proto.mlops.v1 import events_pb2
from tests.conftest import Infra
from tests.helpers.kafka import TopicReader, read_records, read_to_end
from tests.helpers.waiting import eventually


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


# --- the delivery rules on their failure paths --------------------------------------------
#
# Each test below sends plain records (value = their id) to a one-partition topic before the
# loop starts, so the loop's first fetch holds all of them and ``max_batch`` decides the
# batches exactly.

WAIT = 30.0


async def committed(infra: Infra, group: str, tp: TopicPartition) -> int | None:
    """The group's committed offset of ``tp`` as the broker holds it now (None: never committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(tp)
        return offset
    finally:
        await consumer.stop()


class Effects:
    """What a test handler did: every record it handled, in order (a redelivered record
    appears again), and a condition to wait on."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.attempts: list[list[str]] = []
        """The ids of every batch the handler was called with, failed calls included."""
        self.changed = asyncio.Condition()

    async def note_attempt(self, records: list[IncomingRecord]) -> list[str]:
        ids = [(r.value or b"").decode() for r in records]
        async with self.changed:
            self.attempts.append(ids)
            self.changed.notify_all()
        return ids

    async def apply(self, ids: list[str]) -> None:
        async with self.changed:
            self.handled += ids
            self.changed.notify_all()

    async def wait(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT), self.changed:
                await self.changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what}: handled {self.handled}, attempts {self.attempts}"
            ) from None


@asynccontextmanager
async def loop_of(
    infra: Infra,
    topic: str,
    group: str,
    handler: BatchHandler,
    producer: AIOKafkaProducer,
    max_batch: int = 500,
) -> AsyncIterator[ConsumerLoop]:
    loop = ConsumerLoop(
        bootstrap_servers=infra.kafka_bootstrap,
        topics=[topic],
        group_id=group,
        handler=handler,
        producer=producer,
        client_id="test",
        max_batch=max_batch,
        max_retry_delay=0.2,
    )
    await loop.start()
    try:
        yield loop
    finally:
        await loop.stop()


@pytest.fixture
async def source(infra: Infra, topics: Topics) -> AsyncIterator[tuple[str, AIOKafkaProducer]]:
    """A one-partition topic (with its dead-letter topic) and a producer."""
    topic = topics.labels
    await ensure_topics(infra.kafka_bootstrap, [topic, Topics.dlq(topic)], partitions=1)
    producer = create_producer(infra.kafka_bootstrap, "test")
    await producer.start()
    try:
        yield topic, producer
    finally:
        await producer.stop()


async def send_ids(producer: AIOKafkaProducer, topic: str, ids: Sequence[str]) -> None:
    await publish(producer, [OutgoingRecord(topic=topic, value=i.encode(), key=i.encode()) for i in ids])


async def redelivered(
    infra: Infra, topic: str, group: str, producer: AIOKafkaProducer, count: int
) -> list[str]:
    """What a second consumer of ``group`` is given, once it has been given ``count`` records."""
    effects = Effects()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        await effects.apply(await effects.note_attempt(records))
        return []

    async with loop_of(infra, topic, group, handler, producer):
        await effects.wait(lambda: len(effects.handled) >= count, f"{count} records redelivered")
    return effects.handled


async def test_a_loop_stopped_mid_batch_commits_nothing_of_it_and_the_next_member_gets_it_all(
    infra: Infra, topics: Topics, source: tuple[str, AIOKafkaProducer]
) -> None:
    topic, producer = source
    group, tp = f"{topics.prefix}-g", TopicPartition(topic, 0)
    await send_ids(producer, topic, ["r0", "r1", "r2", "r3"])
    effects = Effects()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        ids = await effects.note_attempt(records)
        if "r2" in ids and len(ids) > 1:
            raise ValueError("a record of this batch is broken")  # the loop isolates the batch
        if ids == ["r3"]:
            raise TransientError("database away")  # ... and is stopped while r3 waits
        await effects.apply(ids)
        return []

    async with loop_of(infra, topic, group, handler, producer, max_batch=2):
        await effects.wait(lambda: effects.attempts.count(["r3"]) >= 2, "r3 retried")
        assert await committed(infra, group, tp) == 2
    # Stopped with r2 handled and r3 not: the batch [r2, r3] was interrupted.
    assert effects.attempts[:3] == [["r0", "r1"], ["r2", "r3"], ["r2"]]
    assert effects.handled == ["r0", "r1", "r2"]
    assert await committed(infra, group, tp) == 2

    # The whole interrupted batch comes back, r2 included: its effect may not be the last one
    # (handlers are idempotent), but nothing after the last commit is skipped.
    assert await redelivered(infra, topic, group, producer, 2) == ["r2", "r3"]
    assert await committed(infra, group, tp) == 4


async def test_a_transient_failure_until_stop_leaves_the_committed_offset_and_the_batch_comes_back(
    infra: Infra, topics: Topics, source: tuple[str, AIOKafkaProducer]
) -> None:
    topic, producer = source
    group, tp = f"{topics.prefix}-g", TopicPartition(topic, 0)
    await send_ids(producer, topic, ["r0", "r1", "r2", "r3"])
    effects = Effects()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        ids = await effects.note_attempt(records)
        if "r2" in ids:
            raise TransientError("database away")
        await effects.apply(ids)
        return []

    async with loop_of(infra, topic, group, handler, producer, max_batch=2):
        await effects.wait(lambda: effects.attempts.count(["r2", "r3"]) >= 3, "the batch retried")
    assert effects.handled == ["r0", "r1"]
    # Retried as a whole, never split or dead-lettered: a transient failure is not the records'.
    assert {tuple(a) for a in effects.attempts[1:]} == {("r2", "r3")}
    assert await committed(infra, group, tp) == 2
    assert await read_to_end(infra.kafka_bootstrap, Topics.dlq(topic)) == []

    assert await redelivered(infra, topic, group, producer, 2) == ["r2", "r3"]


async def test_a_record_that_breaks_the_handler_is_dead_lettered_and_the_others_are_handled_once(
    infra: Infra, topics: Topics, source: tuple[str, AIOKafkaProducer]
) -> None:
    topic, producer = source
    group, tp = f"{topics.prefix}-g", TopicPartition(topic, 0)
    await send_ids(producer, topic, ["r0", "r1", "r2", "r3", "r4"])
    effects = Effects()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        ids = await effects.note_attempt(records)
        # Checked before any effect, as a handler that validates first would.
        if "r2" in ids:
            raise KeyError("amount")
        await effects.apply(ids)
        return []

    async with loop_of(infra, topic, group, handler, producer):
        await effects.wait(lambda: len(effects.handled) == 4, "the other records")
        # The loop goes on with what comes next.
        await send_ids(producer, topic, ["r5"])
        await effects.wait(lambda: "r5" in effects.handled, "the next record")

    assert effects.attempts[0] == ["r0", "r1", "r2", "r3", "r4"]
    assert sorted(effects.handled) == ["r0", "r1", "r3", "r4", "r5"]
    [dead] = await read_records(infra.kafka_bootstrap, Topics.dlq(topic), 1)
    headers = dict(dead.headers)
    assert headers[DLQ_ERROR_CLASS] == b"processing_error"
    assert headers[DLQ_ERROR_MESSAGE] == b"KeyError: 'amount'"
    assert headers[DLQ_ORIGINAL_TOPIC] == topic.encode()
    assert (headers[DLQ_ORIGINAL_PARTITION], headers[DLQ_ORIGINAL_OFFSET]) == (b"0", b"2")
    assert (dead.key, dead.value) == (b"r2", b"r2")
    assert await committed(infra, group, tp) == 6


async def test_the_offset_is_committed_only_after_the_effect(
    infra: Infra, topics: Topics, source: tuple[str, AIOKafkaProducer]
) -> None:
    topic, producer = source
    group, tp = f"{topics.prefix}-g", TopicPartition(topic, 0)
    await send_ids(producer, topic, ["r0", "r1"])
    effects = Effects()
    release = asyncio.Event()

    async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        ids = await effects.note_attempt(records)
        await release.wait()  # the effect takes its time
        await effects.apply(ids)
        return []

    async with loop_of(infra, topic, group, handler, producer):
        await effects.wait(lambda: bool(effects.attempts), "the handler called")
        # Asked while the handler works: nothing of the batch is committed yet.
        assert await committed(infra, group, tp) is None
        release.set()
        await effects.wait(lambda: effects.handled == ["r0", "r1"], "the effect")
        await eventually(lambda: committed(infra, group, tp), lambda offset: offset == 2, WAIT)
