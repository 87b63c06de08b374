"""The ingest path, shared by the Kafka consumer and the HTTP batch endpoint.

For a batch of decoded events: validate each against its dataset's latest schema,
store the valid rows in bulk writes (the unique (dataset, event_id) index makes them
idempotent), attach labels that arrive for earlier events, publish ``FeatureRow``
to ``mlops.features`` and ``LabelRecord`` to ``mlops.labels``, count what happened,
and return one :class:`Outcome` per event. Everything is durable when it returns:
the consumer commits its offsets only then.

Redelivery versus duplicate: a stored row remembers where it came from. When an
insert hits an existing row from the *same* source (the consumer crashed after the
write and the record came back), the row is handled again as accepted and
republished, because the first attempt may not have published. A row from another
source is a duplicate event: acknowledged, counted, not stored or published again.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from services.common.events import EnvelopeTemplate, OutgoingRecord, Topics
from services.common.kafka import publish
from services.common.mongo import Document
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema
from services.common.proto.mlops.v1.events_pb2 import FeatureRow, LabelRecord
from services.ingest import metrics
from services.ingest.formats import Decoded, redacted_body
from services.ingest.privacy import Pseudonymizer
from services.ingest.store import DatasetStore, minute_of, utc
from services.ingest.validation import EventValidator, Reason, Rejection, Scalar, ValidEvent, set_cell

SOURCE = "/mlops/ingest"
MAX_SCHEMA_CACHE = 10000
LABEL_OUTCOME = "label"
"""Quality outcome of an event that only carries a label for an earlier event."""


class Status(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(slots=True)
class Submission:
    """One event to ingest: decoded (or refused while decoding), and where it came from
    (``topic/partition/offset``, or ``http/<request id>/<index>``)."""

    decoded: Decoded | Rejection
    source: str


@dataclass(slots=True)
class Outcome:
    """What became of one event. ``redacted_body`` is set for refused events with private
    fields: the body a dead letter must carry instead of the original."""

    status: Status
    dataset: str = ""
    event_id: str = ""
    rejection: Rejection | None = None
    redacted_body: bytes | None = None
    label_only: bool = False


class SchemaCatalog:
    """Validators for each dataset's latest schema, re-read after ``ttl_seconds`` so a
    version registered through any replica takes effect within that delay."""

    def __init__(
        self,
        store: DatasetStore,
        pseudonymizer: Pseudonymizer | None,
        max_clock_skew_seconds: float,
        ttl_seconds: float,
    ):
        self._store = store
        self._pseudonymizer = pseudonymizer
        self._skew = max_clock_skew_seconds
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[EventValidator | None, float]] = {}

    async def validator(self, dataset: str) -> EventValidator | None:
        """The validator of ``dataset``'s latest schema; None when there is no such dataset."""
        cached = self._cache.get(dataset)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        schema = await self._store.get_schema(dataset) if len(dataset) <= 128 else None
        if cached is not None and cached[0] is not None and schema is not None:
            if cached[0].schema.version == schema.version:
                self._cache[dataset] = (cached[0], now)
                return cached[0]
        validator = EventValidator(schema, self._pseudonymizer, self._skew) if schema is not None else None
        if len(self._cache) >= MAX_SCHEMA_CACHE:
            # Unknown names a producer invents must not grow the cache without bound.
            self._cache = {name: entry for name, entry in self._cache.items() if entry[0] is not None}
        self._cache[dataset] = (validator, now)
        return validator

    def forget(self, dataset: str) -> None:
        """Drop the cached schema (after a registration through this replica)."""
        self._cache.pop(dataset, None)


def feature_row(event: ValidEvent, schema: DatasetSchema) -> FeatureRow:
    row = FeatureRow(
        event_id=event.event_id, entity_id=event.entity_id, dataset=schema.name, schema_version=schema.version
    )
    if event.event_time is not None:
        row.event_time.FromDatetime(event.event_time)
    for name, value in event.features.items():
        set_cell(row.features[name], value)
    if event.label is not None:
        set_cell(row.label, event.label)
    return row


def row_document(event: ValidEvent, schema: DatasetSchema, source: str, now: datetime) -> Document:
    assert event.event_time is not None
    document: Document = {
        "dataset": schema.name,
        "event_id": event.event_id,
        "entity_id": event.entity_id,
        "schema_version": schema.version,
        "event_time": event.event_time,
        "ingested_at": now,
        "features": event.features,
        "source": source,
    }
    if event.label is not None:
        document["label"] = event.label
    if schema.retention_seconds:
        document["expire_at"] = event.event_time + timedelta(seconds=schema.retention_seconds)
    return document


@dataclass(slots=True)
class _Row:
    index: int
    event: ValidEvent
    schema: DatasetSchema
    source: str


class _OrderedPublisher:
    """Publishes lists of records in the background, each after the one before: the broker's
    acknowledgements overlap the next bulk insert, and records keep their order."""

    def __init__(self, producer: AIOKafkaProducer):
        self._producer = producer
        self._tail: asyncio.Future[None] | None = None

    def add(self, records: list[OutgoingRecord]) -> None:
        if records:
            self._tail = asyncio.ensure_future(self._after(self._tail, records))

    async def _after(self, previous: asyncio.Future[None] | None, records: list[OutgoingRecord]) -> None:
        if previous is not None:
            await previous
        await publish(self._producer, records)

    async def wait(self) -> None:
        """Return once everything added is acknowledged (or raise the first failure)."""
        if self._tail is not None:
            await self._tail

    async def abandon(self) -> None:
        """After a failure elsewhere: let what was started end, without raising."""
        if self._tail is not None:
            await asyncio.gather(self._tail, return_exceptions=True)


@dataclass(slots=True)
class _Insert:
    """Rows being written, and what they will publish if they turn out new."""

    rows: list[_Row]
    task: asyncio.Future[set[int]]
    encoded: list[tuple[Scalar | None, list[OutgoingRecord]]]


class IngestPipeline:
    """Validate, store, publish and count batches of events (see the module docstring).

    A batch is stored ``store_batch_size`` rows at a time, one bulk insert after the
    other, so that validating the next rows, encoding what these rows publish and
    waiting for the broker all happen while the database writes.
    """

    def __init__(
        self,
        store: DatasetStore,
        catalog: SchemaCatalog,
        producer: AIOKafkaProducer,
        topics: Topics,
        *,
        max_event_bytes: int,
        pending_label_seconds: int,
        store_batch_size: int = 250,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._catalog = catalog
        self._producer = producer
        self._feature_envelope = EnvelopeTemplate(topics.features, FeatureRow, source=SOURCE)
        self._label_envelope = EnvelopeTemplate(topics.labels, LabelRecord, source=SOURCE)
        self._max_event_bytes = max_event_bytes
        self._pending_label_seconds = pending_label_seconds
        self._store_batch_size = store_batch_size
        self._clock = clock

    async def ingest(self, submissions: Sequence[Submission]) -> list[Outcome]:
        now = self._clock()
        outcomes: list[Outcome | None] = [None] * len(submissions)
        label_updates: list[_Row] = []
        quality: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        publisher = _OrderedPublisher(self._producer)
        in_flight: _Insert | None = None
        try:
            for start in range(0, len(submissions), self._store_batch_size):
                chunk = range(start, min(start + self._store_batch_size, len(submissions)))
                rows = await self._validate_all(submissions, chunk, now, outcomes, label_updates)
                if in_flight is not None:
                    publisher.add(await self._settle(in_flight, now, outcomes, quality))
                    in_flight = None
                if rows:
                    in_flight = await self._begin(rows, now)
            if in_flight is not None:
                publisher.add(await self._settle(in_flight, now, outcomes, quality))
                in_flight = None
            publisher.add(await self._attach_labels(label_updates, now, outcomes, quality))
            final = [outcome for outcome in outcomes if outcome is not None]
            assert len(final) == len(submissions)
            events: collections.Counter[tuple[str, str]] = collections.Counter()
            rejections: collections.Counter[tuple[str, str]] = collections.Counter()
            for outcome in final:
                dataset = outcome.dataset or metrics.UNKNOWN_DATASET
                events[(dataset, outcome.status.value)] += 1
                if outcome.status is Status.REJECTED and outcome.rejection is not None:
                    rejection = outcome.rejection
                    quality[
                        (dataset, Status.REJECTED.value, rejection.error_class, rejection.field[:128])
                    ] += 1
                    rejections[(dataset, rejection.error_class)] += 1
            await asyncio.gather(publisher.wait(), self._store.add_quality(minute_of(now), quality))
        except BaseException:
            if in_flight is not None:
                await asyncio.gather(in_flight.task, return_exceptions=True)
            await publisher.abandon()
            raise
        for (dataset, status), count in events.items():
            metrics.EVENTS.labels(dataset, status).inc(count)
        for (dataset, reason), count in rejections.items():
            metrics.REJECTIONS.labels(dataset, reason).inc(count)
        return final

    async def _validate_all(
        self,
        submissions: Sequence[Submission],
        chunk: range,
        now: datetime,
        outcomes: list[Outcome | None],
        label_updates: list[_Row],
    ) -> list[_Row]:
        """Validate ``submissions[chunk]``: refusals go to ``outcomes``, labels for earlier
        events to ``label_updates``; the rows to store are returned."""
        rows: list[_Row] = []
        for index in chunk:
            submission = submissions[index]
            decoded = submission.decoded
            if isinstance(decoded, Rejection):
                outcomes[index] = Outcome(Status.REJECTED, rejection=decoded)
                continue
            validator = await self._catalog.validator(decoded.event.dataset)
            if validator is None:
                name = decoded.event.dataset[:128]
                rejection = Rejection(
                    Reason.UNKNOWN_DATASET, "dataset", f"no dataset named {name!r} is registered"
                )
                outcomes[index] = Outcome(Status.REJECTED, rejection=rejection)
                continue
            result = self._validate(decoded, validator, now)
            if isinstance(result, Rejection):
                outcomes[index] = Outcome(
                    Status.REJECTED,
                    dataset=validator.schema.name,
                    event_id=_text(decoded.event.fields.get(validator.schema.event_id_field)),
                    rejection=result,
                    redacted_body=redact(decoded, validator),
                )
            elif result.label_only:
                label_updates.append(_Row(index, result, validator.schema, submission.source))
            else:
                rows.append(_Row(index, result, validator.schema, submission.source))
        return rows

    def _validate(self, decoded: Decoded, validator: EventValidator, now: datetime) -> ValidEvent | Rejection:
        if decoded.size > self._max_event_bytes:
            message = f"the event has {decoded.size} bytes, more than {self._max_event_bytes}"
            return Rejection(Reason.OVERSIZE, "", message)
        return validator.validate(decoded.event, now)

    async def _begin(self, rows: list[_Row], now: datetime) -> _Insert:
        """Start writing ``rows``, and encode what they publish while the database works."""
        task = asyncio.ensure_future(
            self._store.insert_rows([row_document(r.event, r.schema, r.source, now) for r in rows])
        )
        try:
            encoded = [(row.event.label, self._row_records(row, now)) for row in rows]
        except BaseException:
            await asyncio.gather(task, return_exceptions=True)
            raise
        return _Insert(rows, task, encoded)

    async def _settle(
        self,
        insert: _Insert,
        now: datetime,
        outcomes: list[Outcome | None],
        quality: collections.Counter[tuple[str, str, str, str]],
    ) -> list[OutgoingRecord]:
        """Once the rows are written: which are new, redelivered or duplicates, and the
        records the accepted ones publish."""
        rows = insert.rows
        conflicts = await insert.task
        conflicting: dict[str, list[str]] = {}
        for position in conflicts:
            row = rows[position]
            conflicting.setdefault(row.schema.name, []).append(row.event.event_id)
        stored = {dataset: await self._store.provenance(dataset, ids) for dataset, ids in conflicting.items()}
        accepted: list[tuple[int, _Row]] = []
        for position, row in enumerate(rows):
            event = row.event
            if position in conflicts:
                existing = stored[row.schema.name].get(event.event_id, {})
                if existing.get("source") != row.source:
                    outcomes[row.index] = Outcome(
                        Status.DUPLICATE, dataset=row.schema.name, event_id=event.event_id
                    )
                    quality[(row.schema.name, Status.DUPLICATE.value, "", "")] += 1
                    continue
                # A redelivery: republish the row as stored, with a label attached since.
                if event.label is None and existing.get("label") is not None:
                    event.label = existing["label"]
            outcomes[row.index] = Outcome(Status.ACCEPTED, dataset=row.schema.name, event_id=event.event_id)
            quality[(row.schema.name, Status.ACCEPTED.value, "", "")] += 1
            accepted.append((position, row))
        await self._attach_pending_labels([row for _, row in accepted], now)
        records: list[OutgoingRecord] = []
        for position, row in accepted:
            label_when_encoded, prepared = insert.encoded[position]
            # A label found since (waiting for the row, or attached to a redelivered one).
            records.extend(prepared if row.event.label == label_when_encoded else self._row_records(row, now))
        return records

    def _row_records(self, row: _Row, now: datetime) -> list[OutgoingRecord]:
        """The ``FeatureRow`` of a stored row, and its ``LabelRecord`` when it has a label."""
        key = row.event.entity_id or row.event.event_id
        records = [self._feature_envelope.encode(feature_row(row.event, row.schema), key=key, time=now)]
        if row.event.label is not None:
            records.append(self._label_record(row.event, row.schema.name, now))
        return records

    async def _attach_pending_labels(self, accepted: list[_Row], now: datetime) -> None:
        """Give rows just stored the labels that arrived before them."""
        unlabelled: dict[str, list[_Row]] = {}
        for row in accepted:
            if row.event.label is None:
                unlabelled.setdefault(row.schema.name, []).append(row)
        if not unlabelled or not await self._store.has_pending_labels():
            return
        for dataset, waiting in unlabelled.items():
            pending = await self._store.pending_labels(dataset, [r.event.event_id for r in waiting])
            updates: list[tuple[str, str, Any]] = []
            for row in waiting:
                found = pending.get(row.event.event_id)
                if found is not None:
                    row.event.label = found["label"]
                    updates.append((dataset, row.event.event_id, found["label"]))
            # Set on the rows before dropped from the waiting list: a crash in between
            # leaves the label in both places, never in neither.
            await self._store.set_labels(updates, now)
            await self._store.drop_pending_labels(dataset, [event_id for _, event_id, _ in updates])
            metrics.LABELS.labels(dataset, "attached").inc(len(updates))

    async def _attach_labels(
        self,
        updates: list[_Row],
        now: datetime,
        outcomes: list[Outcome | None],
        quality: collections.Counter[tuple[str, str, str, str]],
    ) -> list[OutgoingRecord]:
        """Labels for earlier events: set on the stored row, or kept until the event comes.

        The label is published in every case, repeats included: the monitor joins it with
        the prediction whether or not the event itself was ever ingested, and a repeat
        after a crash must not be the one that is lost.
        """
        records: list[OutgoingRecord] = []
        for row in updates:
            event, dataset = row.event, row.schema.name
            before = await self._store.set_label(dataset, event.event_id, event.label, now)
            status = Status.ACCEPTED
            if before is None:
                document: Document = {
                    "dataset": dataset,
                    "event_id": event.event_id,
                    "entity_id": event.entity_id,
                    "label": event.label,
                    "received_at": now,
                }
                if event.event_time is not None:
                    document["event_time"] = event.event_time
                await self._store.add_pending_label(document, self._pending_label_seconds)
                metrics.LABELS.labels(dataset, "pending").inc()
                quality[(dataset, LABEL_OUTCOME, "", "")] += 1
            else:
                event.entity_id = event.entity_id or before.get("entity_id", "")
                if event.event_time is None and before.get("event_time") is not None:
                    event.event_time = utc(before["event_time"])
                if before.get("label") == event.label:
                    status = Status.DUPLICATE
                    quality[(dataset, Status.DUPLICATE.value, "", "")] += 1
                else:
                    metrics.LABELS.labels(dataset, "attached").inc()
                    quality[(dataset, LABEL_OUTCOME, "", "")] += 1
            outcomes[row.index] = Outcome(status, dataset=dataset, event_id=event.event_id, label_only=True)
            records.append(self._label_record(event, dataset, now))
        return records

    def _label_record(self, event: ValidEvent, dataset: str, now: datetime) -> OutgoingRecord:
        record = LabelRecord(event_id=event.event_id, entity_id=event.entity_id, dataset=dataset)
        if event.label is not None:
            set_cell(record.label, event.label)
        if event.event_time is not None:
            record.event_time.FromDatetime(event.event_time)
        record.ingested_at.FromDatetime(now)
        return self._label_envelope.encode(record, key=event.event_id, time=now)

    async def redact_undecided(self, decoded: Decoded) -> bytes | None:
        """The body a dead letter must carry for ``decoded`` when it failed outside validation."""
        validator = await self._catalog.validator(decoded.event.dataset)
        return redact(decoded, validator) if validator is not None else None


def redact(decoded: Decoded, validator: EventValidator) -> bytes | None:
    """The re-encoded event with private values pseudonymized, or None when it has none."""
    event = decoded.event
    has_private = bool(validator.private_fields & event.fields.keys())
    if not has_private and not (validator.entity_is_private and event.entity_id):
        return None
    return redacted_body(decoded, validator.redact, validator.redact_value, validator.entity_is_private)


def _text(value: object) -> str:
    return value[:512] if isinstance(value, str) else ""
