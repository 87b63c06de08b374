"""The relay that publishes the outbox to ``mlops.models.events``.

Changes write their events into the ``outbox`` collection in the same transaction as
the change (architecture decision 4); this task publishes them in order, waits for the
broker's acknowledgement, and only then marks them relayed. A crash between the two
publishes an event twice, never zero times: consumers treat model events as triggers
and re-read the registry, so a duplicate is harmless. Relayed events expire after the
retention period (a TTL index).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from services.common.events import encode
from services.common.kafka import create_producer, ensure_topics, publish
from services.common.kafka_security import PLAINTEXT, KafkaSecurity
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import events_pb2
from services.registry.metrics import OUTBOX_PENDING, OUTBOX_RELAYED
from services.registry.store.outbox import OutboxRepository

log = get_logger(__name__)

SOURCE = "/mlops/registry"
BATCH = 200


class OutboxRelay:
    """Publishes the outbox. It connects to Kafka on its own schedule: the registry keeps
    accepting changes while the broker is away, and their events go out once it is back."""

    def __init__(
        self,
        outbox: OutboxRepository,
        bootstrap_servers: str,
        topic: str,
        poll_seconds: float,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ):
        self._outbox = outbox
        self._bootstrap_servers = bootstrap_servers
        self._security = security
        self._producer: AIOKafkaProducer | None = None
        self._topic = topic
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    def wake(self) -> None:
        """A change was committed: relay it now rather than at the next poll."""
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Relay what is pending (briefly), then stop; the rest goes out after a restart."""
        if self._task is None:
            return
        # A flag as well as cancellation: a database call being cancelled may surface as
        # a database error rather than CancelledError, which the loop would retry.
        self._stopping.set()
        self._wakeup.set()
        if self._producer is not None and self._failures == 0:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.relay_pending(), timeout=5)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()

    async def _connect(self) -> AIOKafkaProducer:
        await ensure_topics(self._bootstrap_servers, [self._topic], security=self._security)
        producer = create_producer(self._bootstrap_servers, "mlops-registry", security=self._security)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                if self._producer is None:
                    self._producer = await self._connect()
                relayed = await self.relay_pending()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                log.warning("outbox_relay_failed", error=repr(exc), attempt=self._failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=min(5.0, 0.1 * 2**self._failures))
                continue
            if relayed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_seconds)

    async def relay_pending(self) -> int:
        """Publish every unrelayed event, oldest first; returns how many went out."""
        if self._producer is None:
            raise ConnectionError("not connected to Kafka yet")
        total = 0
        while True:
            pending = await self._outbox.pending(BATCH)
            OUTBOX_PENDING.set(len(pending))
            if not pending:
                return total
            records = []
            for entry in pending:
                event = events_pb2.ModelEvent.FromString(entry.payload)
                records.append(
                    encode(
                        self._topic,
                        event,
                        source=SOURCE,
                        key=entry.key,
                        event_id=entry.event_id,
                        time=event.occurred_at.ToDatetime(UTC),
                    )
                )
            await publish(self._producer, records)
            await self._outbox.relayed(pending, datetime.now(UTC))
            OUTBOX_RELAYED.inc(len(pending))
            total += len(pending)
