"""The Kafka side of the training page: train requests and results in, train requests out.

The console reads ``<prefix>.train.requests`` and ``<prefix>.train.results`` from the start
of what the broker keeps, without a consumer group (each console replica shows every job,
and a group join costs seconds on the embedded broker), into :class:`~services.console.jobs.Jobs`.
It publishes a person's train request the way ``mlops models train`` does, with the
person's token's subject as ``requested_by``.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError

from services.common.events import EnvelopeError, IncomingRecord, Topics, decode, encode
from services.common.kafka import TailReader, create_producer, ensure_topics, publish
from services.common.kafka_security import PLAINTEXT, KafkaSecurity
from services.common.lifecycle import cancel
from services.common.logging import get_logger
from services.common.progress import Resume
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult
from services.console.jobs import Jobs

log = get_logger(__name__)

RETRY_SECONDS = 2.0


class JobFollower:
    """Follows both topics into ``jobs`` until stopped."""

    def __init__(self, bootstrap: str, topics: Topics, jobs: Jobs, *, security: KafkaSecurity = PLAINTEXT):
        self._bootstrap = bootstrap
        self._security = security
        self._topics = topics
        self._jobs = jobs
        self._reader = TailReader(
            bootstrap,
            [topics.train_requests, topics.train_results],
            client_id="mlops-console",
            from_beginning=True,
            resume=Resume.BEGINNING,
            fetch_max_wait_ms=200,
            security=security,
        )
        self._task: asyncio.Task[None] | None = None
        self._producer = create_producer(bootstrap, "mlops-console", linger_ms=0, security=security)

    async def start(self) -> None:
        await ensure_topics(
            self._bootstrap,
            [self._topics.train_requests, self._topics.train_results],
            security=self._security,
        )
        await self._producer.start()
        await self._reader.start()
        self._task = asyncio.create_task(self._follow(), name="console-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)
        await self._reader.stop()
        await self._producer.stop()

    async def submit(self, request: TrainRequest) -> None:
        """Publish ``request`` keyed by its model name, once the broker acknowledged it."""
        record = encode(self._topics.train_requests, request, source="/console", key=request.model_name)
        await publish(self._producer, [record])
        self._jobs.request(request)

    async def _follow(self) -> None:
        while True:
            try:
                for record in await self._reader.read():
                    self._apply(record)
            except (KafkaError, OSError) as exc:
                log.warning("jobs_follow_failed", error=repr(exc), retry_in=RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)

    def _apply(self, record: IncomingRecord) -> None:
        try:
            if record.topic == self._topics.train_requests:
                self._jobs.request(decode(record, TrainRequest).message)
            else:
                self._jobs.result(decode(record, TrainResult).message)
        except EnvelopeError:
            pass  # not ours to judge: the trainer dead-letters what it cannot read
