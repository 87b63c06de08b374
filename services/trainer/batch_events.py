"""Kafka adapters of batch scoring: requests in, results and scores out.

A record that is not a BatchScoreRequest envelope goes to the dead-letter topic; every
request gets its outcome on the results topic, failures included.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.common.events import EnvelopeError, IncomingRecord, decode, encode
from services.common.kafka import DeadLetter, publish
from services.common.proto.mlops.v1.batch_pb2 import BatchScore, BatchScoreRequest, BatchScoreResult
from services.trainer.batch import BatchJobs
from services.trainer.events import SOURCE


class BatchPublisher:
    """Results keyed by job id, scores by event id; returns once the broker acknowledged them."""

    def __init__(self, producer: AIOKafkaProducer, results_topic: str, scores_topic: str):
        self._producer = producer
        self._results = results_topic
        self._scores = scores_topic

    async def result(self, result: BatchScoreResult) -> None:
        await publish(self._producer, [encode(self._results, result, source=SOURCE, key=result.job_id)])

    async def scores(self, scores: Sequence[BatchScore]) -> None:
        await publish(
            self._producer, [encode(self._scores, s, source=SOURCE, key=s.event_id) for s in scores]
        )


class BatchRequestHandler:
    """The ConsumerLoop handler of the batch-requests topic: one job per record, in turn."""

    def __init__(self, jobs: BatchJobs):
        self._jobs = jobs

    async def __call__(self, records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        dead: list[DeadLetter] = []
        for record in records:
            try:
                request = decode(record, BatchScoreRequest).message
            except EnvelopeError as exc:
                dead.append(DeadLetter(record, exc.error_class, str(exc)))
                continue
            await self._jobs.run(request)
        return dead
