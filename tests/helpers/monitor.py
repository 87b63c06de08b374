"""The records the monitor consumes, made as serving, ingest and the registry publish them,
and waiting until the monitor has handled what was sent: for the monitor's and the
console's tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.events import OutgoingRecord, Topics, encode
from services.common.kafka import publish
from services.common.proto.mlops.v1 import events_pb2, model_pb2
from tests.helpers.waiting import wait_for


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def prediction(
    topic: str,
    event_id: str,
    model: str,
    version: int,
    label: str,
    *,
    occurred_at: float,
    features: Sequence[float] = (0.5, 1.5),
    route: str = "production",
    shadow: bool = False,
) -> OutgoingRecord:
    """A single-row classifier prediction, as serving publishes it (row id = request id)."""
    message = events_pb2.PredictionRecord(
        request_id=event_id,
        model_name=model,
        model_version=version,
        route=route,
        shadow=shadow,
        occurred_at=timestamp(occurred_at),
        feature_names=[f"f{i}" for i in range(len(features))],
        rows=[
            events_pb2.PredictedRow(
                id=event_id,
                features=list(features),
                probabilities=[0.3, 0.7] if label == "1" else [0.7, 0.3],
                label=label,
            )
        ],
    )
    return encode(topic, message, source="/test/serving", key=event_id)


def label(topic: str, event_id: str, value: float, *, event_time: float) -> OutgoingRecord:
    """A label as ingest publishes it, keyed by event id."""
    message = events_pb2.LabelRecord(
        event_id=event_id,
        entity_id="u1",
        dataset="demo",
        label=model_pb2.FeatureValue(number_value=value),
        event_time=timestamp(event_time),
        ingested_at=timestamp(event_time + 1),
    )
    return encode(topic, message, source="/test/ingest", key=event_id)


def model_event(topic: str, model: str, version: int, alias: str = "production") -> OutgoingRecord:
    message = events_pb2.ModelEvent(
        event_id=f"{model}-{version}-{alias}",
        type=events_pb2.MODEL_EVENT_TYPE_ALIAS_SET,
        model_name=model,
        version=version,
        alias=alias,
    )
    return encode(topic, message, source="/test/registry", key=model)


async def send(producer: AIOKafkaProducer, records: Iterable[OutgoingRecord], batch: int = 1000) -> None:
    pending: list[OutgoingRecord] = []
    for record in records:
        pending.append(record)
        if len(pending) >= batch:
            await publish(producer, pending)
            pending = []
    await publish(producer, pending)


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    """The true end of every partition of ``topics``: fetch high watermarks, as
    :func:`tests.helpers.kafka.read_to_end` finds them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads the cluster metadata
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        ends: dict[TopicPartition, int | None] = dict.fromkeys(partitions)
        while None in ends.values():
            await consumer.getmany(timeout_ms=100)
            ends = {tp: consumer.highwater(tp) for tp in partitions}
        return {tp: int(end or 0) for tp, end in ends.items()}
    finally:
        await consumer.stop()


async def drained(bootstrap: str, stages: list[tuple[str, list[str]]], within: float) -> None:
    """Wait until the monitor has handled everything sent so far: each stage's topics
    committed by its consumer group up to their end, stage after stage. A stage's ends are
    read once the stage before is committed (a stage commits only what it produced is
    acknowledged), so they include every record still on its way from one stage to the next,
    and nothing that comes later (the sweep's ticks) is waited for."""
    for group, topics in stages:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await end_offsets(bootstrap, topics)

            async def committed_to_end(
                ends: dict[TopicPartition, int] = ends, consumer: AIOKafkaConsumer = consumer
            ) -> bool:
                for tp, end in ends.items():
                    if (await consumer.committed(tp) or 0) < end:
                        return False
                return True

            await wait_for(committed_to_end, within, f"{group} to commit {', '.join(topics)} to their end")
        finally:
            await consumer.stop()


def stages(topics: Topics, group: str) -> list[tuple[str, list[str]]]:
    """The monitor's consumer groups and topics in the order its stages consume them (see
    services/monitor/stream.py): the route's group reads the platform's topics, faust's the
    monitor's own."""
    return [
        (f"{group}-route", [topics.predictions, topics.labels]),
        (group, [f"{topics.prefix}.monitor.join"]),
        (group, [f"{topics.prefix}.monitor.samples"]),
    ]
