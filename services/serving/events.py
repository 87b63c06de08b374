"""Kafka for serving: model lifecycle events in, prediction records out.

Every replica must see every model event, so the listener reads all partitions
without a consumer group and from the end: events are only triggers, the registry
holds the truth, and whatever happened before a replica started it reads from the
registry directly.

Prediction records, one per request, leave through :class:`PredictionPublisher`, which
never blocks or fails a prediction. It uses librdkafka (confluent-kafka) rather than the
platform's aiokafka producer: librdkafka batches and sends from its own threads, outside
the GIL, for about 6 us of CPU per record where aiokafka took about 35 us on the event
loop (and ten times that for a 64-row record), more than the rest of a request's own work.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException, Message, Producer
from prometheus_client import Counter

from services.common import metrics
from services.common.events import EnvelopeError, EnvelopeTemplate, IncomingRecord, OutgoingRecord, decode
from services.common.kafka import TailReader
from services.common.kafka_security import PLAINTEXT, KafkaSecurity
from services.common.lifecycle import cancel
from services.common.logging import get_logger
from services.common.metrics import PREFIX
from services.common.progress import Resume
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

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        on_change: Callable[[str], None],
        client_id: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ):
        self._on_change = on_change
        self._reader = TailReader(
            bootstrap_servers,
            [topic],
            client_id=client_id,
            # Model events are rare and a swap may take half a second to start; every empty
            # fetch answered costs the event loop, which is what bounds the request rate.
            fetch_max_wait_ms=500,
            # The app created the topic: a missing one is a broker that lost it, at once.
            metadata_timeout=0,
            # A log that lost its records starts again with events published since: every
            # one is news (and a trigger read twice only re-reads the registry).
            resume=Resume.BEGINNING,
            security=security,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading; returns once every partition's position is fixed, so no later event is missed."""
        await self._reader.start()
        self._task = asyncio.create_task(self._run(), name="model-events")

    def problem(self) -> str | None:
        """Why model events are not being heard (None while they are)."""
        if self._task is None or self._task.done():
            return "not listening"
        return self._reader.problem()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)
        try:
            await self._reader.stop()
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
                records = await self._reader.read(timeout_ms=1000)
            except KafkaError as exc:
                # The periodic full read covers what this misses; never stop listening.
                log.warning("model_events_read_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            for record in records:
                self._handle(record)

    def _handle(self, record: IncomingRecord) -> None:
        try:
            event = decode(record, events_pb2.ModelEvent).message
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


class PredictionPublisher:
    """The prediction log's producer: :meth:`offer` never blocks and never raises.

    librdkafka queues up to ``capacity`` records (and ``max_buffer_bytes``) and sends them in
    batches from its own threads. A record that does not fit while the broker is slow or away
    is dropped, and so is one the broker has not acknowledged after ``delivery_timeout_ms``;
    both are counted in ``mlops_kafka_records_dropped_total`` (reason ``buffer_full`` or
    ``broker_error``), and records still unsent when :meth:`stop` gives up as ``unsent_at_stop``.
    Keys are partitioned with murmur2 like aiokafka and the Java client, so a request id lands
    on the same partition as the label keyed by the same event id.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        client_id: str,
        capacity: int,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        delivery_timeout_ms: int = 15000,
        security: KafkaSecurity = PLAINTEXT,
    ):
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "acks": "all",
                # The embedded broker has no InitProducerId; consumers dedupe anyway.
                "enable.idempotence": False,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": capacity,
                "queue.buffering.max.kbytes": max(1, max_buffer_bytes // 1024),
                "message.max.bytes": 8 * 1024 * 1024,
                "message.timeout.ms": delivery_timeout_ms,
                "logger": logging.getLogger("serving.kafka"),
                **security.librdkafka(),
            }
        )
        self._topic = topic
        self._published = metrics.KAFKA_PUBLISHED.labels(topic)
        self._dropped_full = metrics.KAFKA_PUBLISH_DROPPED.labels(topic, "buffer_full")
        self._dropped_error = metrics.KAFKA_PUBLISH_DROPPED.labels(topic, "broker_error")
        self._dropped_unsent = metrics.KAFKA_PUBLISH_DROPPED.labels(topic, "unsent_at_stop")
        self._queue_gauge = metrics.KAFKA_PUBLISH_QUEUE.labels(topic)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def offer(self, record: OutgoingRecord) -> None:
        try:
            self._producer.produce(
                record.topic,
                record.value,
                record.key,
                headers=list(record.headers),
                on_delivery=self._delivered,
            )
        except BufferError:
            self._dropped_full.inc()
            self.dropped += 1
        except KafkaException as exc:
            self._dropped_error.inc()
            self.dropped += 1
            log.warning("prediction_record_refused", topic=self._topic, error=str(exc))

    def _delivered(self, error: object, message: Message) -> None:
        if error is None:
            self._published.inc()
        else:
            self._dropped_error.inc()
            self.dropped += 1

    @property
    def pending(self) -> int:
        return len(self._producer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve_callbacks(), name=f"publisher:{self._topic}")

    async def _serve_callbacks(self) -> None:
        """Delivery reports and librdkafka's logs arrive through poll()."""
        while True:
            self._producer.poll(0)
            self._queue_gauge.set(len(self._producer))
            await asyncio.sleep(0.05)

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Hand what is queued to the broker (up to ``flush_timeout``), then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        unsent = await asyncio.get_running_loop().run_in_executor(None, self._producer.flush, flush_timeout)
        if unsent:
            self._dropped_unsent.inc(unsent)
            self.dropped += unsent
            log.warning("prediction_records_unsent", topic=self._topic, records=unsent)
        self._queue_gauge.set(0)


class RecordSink(Protocol):
    """Takes records for the broker without blocking (a :class:`PredictionPublisher`)."""

    def offer(self, record: OutgoingRecord) -> None: ...


class PredictionLog:
    """Turns each served answer into one PredictionRecord on the predictions topic.

    The record is written in protobuf's wire format directly, in field-number order as
    protobuf writes it: what a version repeats in every record (its name, number and
    feature names) is encoded once per version, and only the request's own fields are
    encoded per request. Building a message object held 20 feature names cost more than
    the rest of the record.
    """

    def __init__(self, publisher: RecordSink, topic: str):
        self._publisher = publisher
        self._envelope = EnvelopeTemplate(topic, events_pb2.PredictionRecord, source=SOURCE)
        self._version_fields: weakref.WeakKeyDictionary[LoadedVersion, tuple[bytes, bytes]] = (
            weakref.WeakKeyDictionary()
        )

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
        fields = self._version_fields.get(version)
        if fields is None:
            fields = self._version_fields[version] = version_fields(
                predictor.name, predictor.version, predictor.feature_names
            )
        rows = encode_rows(
            request_id,
            batch.row_ids,
            predictor.logged_features(batch.matrix),
            outputs.get("probabilities"),
            outputs.get("label"),
            outputs.get("value"),
        )
        body = b"".join(
            (
                _text(1, request_id),
                fields[0],
                _text(4, route),
                _SHADOW if shadow else b"",
                _timestamp(6, time.time_ns()),
                _int(7, int(latency_seconds * 1e6)),
                fields[1],
                rows,
            )
        )
        self._publisher.offer(self._envelope.encode(_EMPTY_RECORD, key=request_id, serialized_fields=body))


_EMPTY_RECORD = events_pb2.PredictionRecord()
_SHADOW = b"\x28\x01"  # PredictionRecord.shadow = true


def version_fields(name: str, number: int, feature_names: Sequence[str]) -> tuple[bytes, bytes]:
    """A version's PredictionRecord fields in wire format: (model_name and model_version,
    feature_names), which surround the per-request fields in field-number order."""
    names = b"".join(_length_delimited(8, feature.encode()) for feature in feature_names)
    return _text(2, name) + _int(3, number), names


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


def _length_delimited(field: int, value: bytes) -> bytes:
    return bytes([field << 3 | 2]) + _varint(len(value)) + value


def _int(field: int, value: int) -> bytes:
    """A non-negative int64 field (omitted when 0, as proto3 does)."""
    return bytes([field << 3]) + _varint(value) if value > 0 else b""


def _timestamp(field: int, nanoseconds: int) -> bytes:
    """A ``google.protobuf.Timestamp`` field."""
    seconds, nanos = divmod(nanoseconds, 1_000_000_000)
    return _length_delimited(field, _int(1, seconds) + _int(2, nanos))


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
