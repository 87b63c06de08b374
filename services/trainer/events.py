"""Kafka adapters: train requests in, train results out.

A record that is not a TrainRequest envelope, or names no model, goes to the dead-letter
topic; everything else is a job and gets its answer on the results topic, failures
included, so whoever asked always hears back.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.common.events import EnvelopeError, IncomingRecord, decode, encode
from services.common.kafka import DeadLetter, publish
from services.common.logging import get_logger
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult
from services.trainer.runner import JobRunner

log = get_logger(__name__)

SOURCE = "/mlops/trainer"


class ResultPublisher:
    """Publishes TrainResults keyed by model name and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str):
        self._producer = producer
        self._topic = topic

    async def __call__(self, result: TrainResult) -> None:
        await publish(self._producer, [encode(self._topic, result, source=SOURCE, key=result.model_name)])


class TrainRequestHandler:
    """The ConsumerLoop handler of the train-requests topic."""

    def __init__(self, runner: JobRunner):
        self._runner = runner

    async def __call__(self, records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        dead: list[DeadLetter] = []
        for record in records:
            try:
                envelope = decode(record, TrainRequest)
            except EnvelopeError as exc:
                dead.append(DeadLetter(record, exc.error_class, str(exc)))
                continue
            request = envelope.message
            if not request.model_name:
                dead.append(
                    DeadLetter(record, "invalid_request", "model_name is required", field="model_name")
                )
                continue
            if not request.request_id:
                # The envelope's id is unique per message and stable across redeliveries.
                request.request_id = envelope.id
            log.info(
                "train_request",
                request_id=request.request_id,
                model=request.model_name,
                idempotency_key=request.idempotency_key,
            )
            await self._runner.handle(request)
        return dead
