"""Kafka for serving: model lifecycle events in, prediction records out.

Every replica must see every model event, so the listener reads all partitions
without a consumer group and from the end: events are only triggers, the registry
holds the truth, and whatever happened before a replica started it reads from the
registry directly. Prediction records leave through a :class:`BackgroundPublisher`,
which never blocks or fails a prediction.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from services.common.events import EnvelopeError, EnvelopeTemplate, IncomingRecord, OutgoingRecord, decode
from services.common.logging import get_logger
from services.common.metrics import PREFIX
from services.common.proto.mlops.v1 import events_pb2
from services.serving.models import LoadedVersion
from services.serving.predictor import FeatureBatch, Outputs

log = get_logger(__name__)

SOURCE = "/mlops/serving"

MODEL_EVENTS = Counter(
    f"{PREFIX}_serving_model_events_total",
    "Model lifecycle events read, by outcome (applied, or the reason one was ignored).",
    ["outcome"],
)


class ModelEventsListener:
    """Calls ``on_change(model_name)`` for every model event published after :meth:`start`."""

    def __init__(self, bootstrap_servers: str, topic: str, on_change: Callable[[str], None], client_id: str):
        self._topic = topic
        self._on_change = on_change
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading; returns once every partition's position is fixed, so no later event is missed.

        The topic must exist (the app creates it): partitions are assigned, not subscribed,
        so there is no group to join.
        """
        await self._consumer.start()
        await self._consumer.topics()
        partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            raise RuntimeError(f"topic {self._topic} does not exist")
        assignment = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assignment)
        await self._consumer.seek_to_end(*assignment)
        for partition in assignment:
            await self._consumer.position(partition)
        self._task = asyncio.create_task(self._run(), name="model-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self._consumer.stop()
        except asyncio.CancelledError:
            # aiokafka lets a fetch it cancels itself escape when the broker is away; only a
            # cancellation of this task is ours to pass on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("model_events_consumer_stopped_uncleanly")

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                # The periodic full read covers what this misses; never stop listening.
                log.warning("model_events_read_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self._handle(record)

    def _handle(self, record: Any) -> None:
        incoming = IncomingRecord(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(record.headers or ()),
            record.timestamp,
        )
        try:
            event = decode(incoming, events_pb2.ModelEvent).message
        except EnvelopeError as exc:
            MODEL_EVENTS.labels(exc.error_class).inc()
            log.warning(
                "model_event_ignored", offset=record.offset, error_class=exc.error_class, error=str(exc)
            )
            return
        if not event.model_name:
            MODEL_EVENTS.labels("no_model_name").inc()
            return
        MODEL_EVENTS.labels("applied").inc()
        self._on_change(event.model_name)


class RecordSink(Protocol):
    """Takes records for the broker without blocking (a :class:`BackgroundPublisher`)."""

    def offer(self, record: OutgoingRecord) -> None: ...


class PredictionLog:
    """Turns each served answer into one PredictionRecord on the predictions topic."""

    def __init__(self, publisher: RecordSink, topic: str):
        self._publisher = publisher
        self._envelope = EnvelopeTemplate(topic, events_pb2.PredictionRecord, source=SOURCE)

    def record(
        self,
        *,
        request_id: str,
        version: LoadedVersion,
        route: str,
        shadow: bool,
        batch: FeatureBatch,
        outputs: Outputs,
        latency_seconds: float,
    ) -> None:
        predictor = version.predictor
        message = events_pb2.PredictionRecord(
            request_id=request_id,
            model_name=predictor.name,
            model_version=predictor.version,
            route=route,
            shadow=shadow,
            latency_us=int(latency_seconds * 1e6),
            feature_names=predictor.feature_names,
        )
        message.occurred_at.FromNanoseconds(time.time_ns())
        rows = encode_rows(
            request_id,
            batch.row_ids,
            predictor.logged_features(batch.matrix),
            outputs.get("probabilities"),
            outputs.get("label"),
            outputs.get("value"),
        )
        self._publisher.offer(self._envelope.encode(message, key=request_id, serialized_fields=rows))


def encode_rows(
    request_id: str,
    row_ids: Sequence[str] | None,
    features: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    labels: np.ndarray[Any, Any] | None,
    values: np.ndarray[Any, Any] | None,
) -> bytes:
    """``PredictionRecord.rows`` in protobuf's wire format, written straight from the arrays.

    Building one ``PredictedRow`` object per row cost a 64-row request about a quarter of
    its predict time; the rows' numbers are little-endian doubles already, so each row is a
    few slices of two buffers. The result is byte for byte what protobuf writes for the
    same rows (``tests/unit/serving/test_prediction_log.py`` holds it to that).
    """
    count, width = features.shape
    feature_bytes = np.ascontiguousarray(features, dtype="<f8").tobytes()
    feature_stride = 8 * width
    # Every row repeats this layout; only its id, label and value differ.
    fixed = [b"\x12" + _varint(feature_stride)]
    probability_bytes = b""
    probability_stride = 0
    if probabilities is not None:
        probability_bytes = np.ascontiguousarray(probabilities, dtype="<f8").tobytes()
        probability_stride = 8 * probabilities.shape[1]
        fixed.append(b"\x1a" + _varint(probability_stride))
    fixed_length = sum(map(len, fixed)) + feature_stride + probability_stride
    label_list = labels.tolist() if labels is not None else None
    value_list = values.tolist() if values is not None else None
    label_fields: dict[str, bytes] = {}
    parts: list[bytes] = []
    for i in range(count):
        if row_ids is not None:
            id_field = _text(1, row_ids[i])
        else:
            id_field = _text(1, request_id if count == 1 else f"{request_id}/{i}")
        row = [id_field, fixed[0], feature_bytes[i * feature_stride : (i + 1) * feature_stride]]
        if probabilities is not None:
            row += [fixed[1], probability_bytes[i * probability_stride : (i + 1) * probability_stride]]
        length = len(id_field) + fixed_length
        if label_list is not None:
            label = label_list[i]
            field = label_fields.get(label)
            if field is None:
                field = label_fields[label] = _text(4, label)
            row.append(field)
            length += len(field)
        if value_list is not None and value_list[i] != 0.0:
            row.append(b"\x29" + struct.pack("<d", value_list[i]))
            length += 9
        parts += [_ROW_TAG, _varint(length), *row]
    return b"".join(parts)


_ROW_TAG = b"\x4a"  # PredictionRecord.rows: field 9, length-delimited


def _text(field: int, value: str) -> bytes:
    """A string field (omitted when empty, as proto3 does)."""
    if not value:
        return b""
    encoded = value.encode()
    return bytes([field << 3 | 2]) + _varint(len(encoded)) + encoded


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]
