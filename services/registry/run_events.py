"""The trainer's results in, as runs: the registry's one consumer.

:class:`RunRecorder` follows ``mlops.train.results`` in a consumer group (replicas share
its partitions) and folds each result into its run (:mod:`services.registry.runs`),
committing offsets only after the run is written. A record that is not a TrainResult, or
names no valid model or request, goes to the dead-letter topic with the reason. The
recorder connects to Kafka on its own schedule, as the outbox relay does: the registry
serves while the broker is away, and the results waiting on the topic are recorded once
it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.common.errors import InvalidArgument
from services.common.events import EnvelopeError, IncomingRecord, Topics, decode
from services.common.kafka import ConsumerLoop, DeadLetter, create_producer, ensure_topics
from services.common.kafka_security import KafkaSecurity
from services.common.logging import get_logger
from services.common.proto.mlops.v1.events_pb2 import TrainResult
from services.registry.runs import RunUseCases
from services.registry.settings import RegistrySettings

log = get_logger(__name__)


class RunRecorder:
    """Consumes the trainer's results into runs (see the module docstring)."""

    def __init__(self, runs: RunUseCases, settings: RegistrySettings):
        self._runs = runs
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).train_results
        self._producer: AIOKafkaProducer | None = None
        self._consumer: ConsumerLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.consuming = asyncio.Event()
        """Set once the consumer has joined its group and been given partitions."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="run-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _connect(self) -> None:
        settings = self._settings
        security = KafkaSecurity.from_settings(settings)
        for attempt in itertools.count(1):
            try:
                await ensure_topics(
                    settings.kafka_bootstrap_servers,
                    [self._topic, Topics.dlq(self._topic)],
                    security=security,
                )
                self._producer = create_producer(
                    settings.kafka_bootstrap_servers, "mlops-registry-runs", security=security
                )
                await self._producer.start()
                self._consumer = ConsumerLoop(
                    bootstrap_servers=settings.kafka_bootstrap_servers,
                    topics=[self._topic],
                    group_id=f"{settings.topic_prefix}.{settings.runs_consumer_group}",
                    handler=self._handle,
                    producer=self._producer,
                    client_id="mlops-registry-runs",
                    security=security,
                )
                await self._consumer.start()
                await self._consumer.assigned.wait()
                self.consuming.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("run_recorder_connect_failed", error=repr(exc), attempt=attempt)
                for part in (self._consumer, self._producer):
                    if part is not None:
                        with contextlib.suppress(Exception):
                            await part.stop()
                self._consumer, self._producer = None, None
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))

    async def _handle(self, records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        dead: list[DeadLetter] = []
        for record in records:
            try:
                result = decode(record, TrainResult).message
            except EnvelopeError as exc:
                dead.append(DeadLetter(record, exc.error_class, str(exc)))
                continue
            try:
                await self._runs.record_result(result)
            except InvalidArgument as exc:
                dead.append(DeadLetter(record, "invalid_result", exc.message, field=exc.field))
        return dead
