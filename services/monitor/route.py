"""The route stage: the platform's records in, the monitor's join batches out.

It opens each envelope from the predictions, labels, model-events and train-results
topics, checks it (see docs/monitor.md, *Bad input*), and re-keys every predicted row and
label by its row id onto the join topic; model events and retrain outcomes go straight to
the samples topic, keyed by model. It runs as the handler of a
:class:`~services.common.kafka.ConsumerLoop`: what it returns is dead-lettered, and the
batch is committed only once its join and samples batches are acknowledged.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from services.common.events import EnvelopeError, IncomingRecord, Topics
from services.common.kafka import DeadLetter
from services.common.logging import get_logger
from services.monitor.events import label_from, live_version_from, predictions_from, train_outcome_from
from services.monitor.internal import Batches
from services.monitor.records import InvalidRecord

log = get_logger(__name__)


class Router:
    """Routes batches of the platform's records onto ``join_topic`` and ``samples_topic``."""

    def __init__(
        self,
        topics: Topics,
        join_topic: str,
        samples_topic: str,
        partitions: int,
        producer: AIOKafkaProducer,
    ):
        self._topics = topics
        self._join_topic = join_topic
        self._samples_topic = samples_topic
        self._partitions = partitions
        self._producer = producer

    async def handle(self, records: list[IncomingRecord]) -> list[DeadLetter]:
        """Route ``records``; returns the ones refused, with why. Returns once what was
        routed is acknowledged by the broker."""
        out = Batches(self._partitions)
        dead = []
        for record in records:
            try:
                self._route(record, out)
            except (EnvelopeError, InvalidRecord) as exc:
                error_class = exc.error_class if isinstance(exc, EnvelopeError) else "invalid"
                field = exc.field if isinstance(exc, InvalidRecord) else ""
                dead.append(DeadLetter(record, error_class, str(exc), field))
            except Exception as exc:
                log.exception("route_failed", topic=record.topic, offset=record.offset)
                dead.append(DeadLetter(record, "processing_error", f"{type(exc).__name__}: {exc}"))
        sent = [
            await self._producer.send(topic, value, partition=partition)
            for topic, partition, value in out.messages(self._join_topic, self._samples_topic)
        ]
        await asyncio.gather(*sent)
        return dead

    def _route(self, record: IncomingRecord, out: Batches) -> None:
        topics = self._topics
        if record.topic == topics.predictions:
            for prediction in predictions_from(record):
                out.add_prediction(prediction)
        elif record.topic == topics.labels:
            out.add_label(label_from(record))
        elif record.topic == topics.train_results:
            trained = train_outcome_from(record)
            if trained is not None:
                outcome = out.add_sample(trained.model).retrain_outcome
                outcome.model = trained.model
                outcome.idempotency_key = trained.key
                outcome.outcome = trained.outcome
                outcome.detail = trained.detail
        else:
            live = live_version_from(record)
            if live is not None:
                model, version = live
                item = out.add_sample(model).live_version
                item.model, item.version = model, version
