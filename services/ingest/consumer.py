"""Kafka adapter: raw events in, through the pipeline, refused events to ``<raw>.dlq``.

The shared :class:`ConsumerLoop` commits each batch only after the handler returns
(rows stored, features and labels published, dead letters sent), retries the batch
while MongoDB or the broker is away, and isolates a batch that breaks the handler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.common.events import IncomingRecord, Topics
from services.common.kafka import ConsumerLoop, DeadLetter, is_transient
from services.common.kafka_security import KafkaSecurity
from services.common.logging import get_logger
from services.ingest.formats import Decoded, decode_record
from services.ingest.pipeline import IngestPipeline, Status, Submission
from services.ingest.settings import IngestSettings

log = get_logger(__name__)


def source_of(record: IncomingRecord) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


class RawEventConsumer:
    """Consumes ``mlops.events.raw`` in the ingest consumer group."""

    def __init__(
        self, settings: IngestSettings, pipeline: IngestPipeline, producer: AIOKafkaProducer, topics: Topics
    ):
        self._pipeline = pipeline
        self.loop = ConsumerLoop(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topics=[topics.raw_events],
            group_id=f"{settings.topic_prefix}.{settings.consumer_group}",
            handler=self.handle,
            producer=producer,
            client_id="mlops-ingest",
            max_batch=settings.consumer_batch_size,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            security=KafkaSecurity.from_settings(settings),
        )

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def handle(self, records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        submissions = [Submission(decode_record(r), source_of(r)) for r in records]
        try:
            outcomes = await self._pipeline.ingest(submissions)
        except Exception as exc:
            if is_transient(exc) or len(records) > 1:
                raise
            # The loop is isolating a record that breaks the pipeline: dead-letter it here,
            # so the dead letter carries pseudonyms rather than the raw private values.
            return [await self._broken(records[0], submissions[0], exc)]
        dead: list[DeadLetter] = []
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome.status is not Status.REJECTED or outcome.rejection is None:
                continue
            if outcome.redacted_body is not None:
                record = dataclasses.replace(record, value=outcome.redacted_body)
            rejection = outcome.rejection
            dead.append(DeadLetter(record, rejection.error_class, rejection.message, rejection.field))
        return dead

    async def _broken(self, record: IncomingRecord, submission: Submission, exc: Exception) -> DeadLetter:
        log.error("event_processing_failed", source=submission.source, error=type(exc).__name__)
        if isinstance(submission.decoded, Decoded):
            body = await self._pipeline.redact_undecided(submission.decoded)
            if body is not None:
                record = dataclasses.replace(record, value=body)
        return DeadLetter(record, "processing_error", f"{type(exc).__name__} while ingesting the event")
