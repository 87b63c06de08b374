"""A consumer cut off from its broker by the network (a proxy the test controls): the last
lag it saw was 0, yet it is not caught up, it hears nothing. It says so once the stall has
passed, and consumes again by itself once the link is back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from services.common.events import IncomingRecord, OutgoingRecord, Topics, encode
from services.common.kafka import ConsumerLoop, DeadLetter, create_producer, ensure_topics, publish
from services.common.localstack import free_port, start_kafka
from services.common.proto.mlops.v1 import events_pb2
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults  # slow: `make test-faults` runs it, and CI


def label(topic: str, event_id: str) -> OutgoingRecord:
    return encode(topic, events_pb2.LabelRecord(event_id=event_id), source="/test", key=event_id)


async def test_a_consumer_cut_from_its_broker_says_so_and_consumes_again_once_mended(
    topics: Topics, tmp_path: Path
) -> None:
    kafka_port = free_port()
    with TcpProxy(kafka_port) as link:
        kafka = start_kafka(kafka_port, log_path=tmp_path / "kafka.log", advertised_port=link.port)
        source = topics.labels
        await ensure_topics(link.address, [source], partitions=1)
        producer = create_producer(link.address, "test-cut")
        await producer.start()
        handled: list[IncomingRecord] = []

        async def handler(records: list[IncomingRecord]) -> Sequence[DeadLetter]:
            handled.extend(records)
            return []

        loop = ConsumerLoop(
            bootstrap_servers=link.address,
            topics=[source],
            group_id=f"{topics.prefix}.cut",
            handler=handler,
            producer=producer,
            client_id="test-cut",
            stall_seconds=1.0,
        )
        try:
            await loop.start()
            await publish(producer, [label(source, "before")])
            await wait_for(lambda: len(handled) == 1, 60, "the first record handled")
            assert loop.problem() is None

            link.cut()
            await wait_for(lambda: loop.problem() is not None, 60, "the cut reported")
            assert (loop.problem() or "").startswith("no answer from the broker for ")

            link.mend()
            await publish(producer, [label(source, "after")])
            await wait_for(lambda: len(handled) == 2, 60, "the record sent after the mend handled")
            await wait_for(lambda: loop.problem() is None, 30, "readiness back")
        finally:
            await loop.stop()
            await producer.stop()
            kafka.stop()
