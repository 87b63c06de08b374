"""Kafka plumbing: producers, a non-blocking publisher for hot paths, the consumer loop, and
the tail reader for following topics without a consumer group.

The consumer loop is where the platform's delivery rules live, once:

- offsets are committed only after the handler's effect is durable, so a crash
  redelivers rather than loses (handlers must therefore be idempotent);
- a record the handler refuses, or that breaks it, goes to ``<topic>.dlq`` with
  headers naming the error and the original topic, partition and offset, and the
  loop moves on: a poison message never stops or spins a consumer;
- a transient failure (database or broker away) is retried with backoff, without
  committing and without dead-lettering, so nothing is lost while a dependency is down;
- a log that moved behind the consumer (the broker lost its records) is read again from
  its new beginning, and a consumer that stops consuming says so (see
  :mod:`services.common.progress`).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError

from services.common import metrics, mongo, tracing
from services.common.errors import PlatformError
from services.common.events import IncomingRecord, OutgoingRecord
from services.common.grpc_errors import platform_error
from services.common.kafka_security import PLAINTEXT, KafkaSecurity
from services.common.logging import get_logger
from services.common.progress import STALL_SECONDS, Progress, Resume, lag, resume_past_end

log = get_logger(__name__)

DLQ_ERROR_CLASS = "dlq.error.class"
DLQ_ERROR_FIELD = "dlq.error.field"
DLQ_ERROR_MESSAGE = "dlq.error.message"
DLQ_ORIGINAL_TOPIC = "dlq.original.topic"
DLQ_ORIGINAL_PARTITION = "dlq.original.partition"
DLQ_ORIGINAL_OFFSET = "dlq.original.offset"
MAX_ERROR_MESSAGE_BYTES = 1024
STUCK_FETCH_SECONDS = 2.0
"""How long a stopping loop waits for a fetch (200 ms at most while the broker answers)
before it takes the fetch for stuck."""


class TransientError(Exception):
    """Raised by a handler when a dependency is away and the batch should be retried later."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the infrastructure's (retry) rather than the record's (dead-letter):
    the broker or the database away, or a platform error of a retryable kind (a service
    unavailable or overloaded, a call past its deadline)."""
    if isinstance(exc, TransientError | KafkaError | ConnectionError | TimeoutError | asyncio.TimeoutError):
        return True
    if isinstance(exc, PlatformError):
        return exc.kind.retryable
    if isinstance(exc, grpc.RpcError):
        # A call through a stub that translating() did not wrap: the same table decides, so
        # a dependency that is away is retried, never dead-lettered.
        return platform_error(exc).kind.retryable
    return mongo.is_transient(exc)


@dataclass(frozen=True)
class DeadLetter:
    """A record refused by a handler, with why."""

    record: IncomingRecord
    error_class: str
    message: str
    field: str = ""

    def to_outgoing(self) -> OutgoingRecord:
        reason = self.message.encode("utf-8", "replace")[:MAX_ERROR_MESSAGE_BYTES]
        headers = [(k, v) for k, v in self.record.headers if not k.startswith("dlq.")]
        headers += [
            (DLQ_ERROR_CLASS, self.error_class.encode()),
            (DLQ_ERROR_FIELD, self.field.encode("utf-8", "replace")),
            (DLQ_ERROR_MESSAGE, reason),
            (DLQ_ORIGINAL_TOPIC, self.record.topic.encode()),
            (DLQ_ORIGINAL_PARTITION, str(self.record.partition).encode()),
            (DLQ_ORIGINAL_OFFSET, str(self.record.offset).encode()),
        ]
        return OutgoingRecord(
            topic=f"{self.record.topic}.dlq",
            value=self.record.value or b"",
            key=self.record.key,
            headers=headers,
        )

    def sent(self) -> None:
        """Count and log the dead letter once it is on its topic (every consumer, alike)."""
        metrics.KAFKA_DEAD_LETTERS.labels(self.record.topic, self.error_class).inc()
        log.info(
            "dead_letter",
            topic=self.record.topic,
            partition=self.record.partition,
            offset=self.record.offset,
            error_class=self.error_class,
            field=self.field,
        )


def create_producer(
    bootstrap_servers: str, client_id: str, *, linger_ms: int = 5, security: KafkaSecurity = PLAINTEXT
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas and batches for ``linger_ms``.

    Idempotence stays off: the embedded broker does not implement InitProducerId,
    and duplicates are harmless because every consumer dedupes on event ids.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        enable_idempotence=False,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=15000,
        **security.aiokafka(),
    )


async def publish(producer: AIOKafkaProducer, records: Iterable[OutgoingRecord]) -> None:
    """Send ``records`` and return once the broker has acknowledged every one."""
    futures = []
    for record in records:
        futures.append(
            await producer.send(record.topic, record.value, key=record.key, headers=list(record.headers))
        )
        metrics.KAFKA_PUBLISHED.labels(record.topic).inc()
    if futures:
        await asyncio.gather(*futures)


class BackgroundPublisher:
    """Publishing for hot paths: :meth:`offer` never blocks and never raises.

    Records wait in a bounded buffer drained by a background task in batches. When the
    buffer is full (the broker is away or slow) the oldest record is dropped and
    counted, so a prediction is never delayed or failed by its own log record.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, capacity: int = 10000, batch_size: int = 500):
        self._producer = producer
        self._topic = topic
        self._buffer: collections.deque[OutgoingRecord] = collections.deque()
        self._capacity = capacity
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._queue_gauge = metrics.KAFKA_PUBLISH_QUEUE.labels(topic)
        self._dropped_full = metrics.KAFKA_PUBLISH_DROPPED.labels(topic, "buffer_full")
        self._dropped_error = metrics.KAFKA_PUBLISH_DROPPED.labels(topic, "broker_error")
        self.dropped = 0

    def offer(self, record: OutgoingRecord) -> None:
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._dropped_full.inc()
            self.dropped += 1
        self._buffer.append(record)
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name=f"publisher:{self._topic}")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Flush what is buffered (up to ``flush_timeout``), then stop."""
        deadline = time.monotonic() + flush_timeout
        while self._buffer and time.monotonic() < deadline and self._task and not self._task.done():
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            if not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
            self._queue_gauge.set(len(self._buffer))
            try:
                await publish(self._producer, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._dropped_error.inc(len(batch))
                self.dropped += len(batch)
                log.warning("publish_failed", topic=self._topic, records=len(batch), error=str(exc))
                await asyncio.sleep(0.5)


BatchHandler = Callable[[list[IncomingRecord]], Awaitable[Sequence[DeadLetter]]]


class ConsumerLoop:
    """Consumes ``topics`` in a consumer group and hands batches to ``handler``.

    The handler returns the records it refuses as :class:`DeadLetter`; everything
    else in the batch must be durably handled when it returns. It raises a transient
    error (see :func:`is_transient`) to have the batch retried; any other exception
    makes the loop retry record by record and dead-letter the ones that still fail.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topics: Sequence[str],
        group_id: str,
        handler: BatchHandler,
        producer: AIOKafkaProducer,
        client_id: str,
        max_batch: int = 500,
        fetch_max_wait_ms: int = 100,
        auto_offset_reset: str = "earliest",
        max_retry_delay: float = 5.0,
        stall_seconds: float = STALL_SECONDS,
        security: KafkaSecurity = PLAINTEXT,
    ):
        self._topics = list(topics)
        self._group_id = group_id
        self._handler = handler
        self._producer = producer
        self._max_batch = max_batch
        self._max_retry_delay = max_retry_delay
        # Subscribed in start(), after the consumer started: start() then does not wait for
        # the group join (see start()).
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            session_timeout_ms=10000,
            heartbeat_interval_ms=2000,
            **security.aiokafka(),
        )
        self._stopping = asyncio.Event()
        self._fetching = False
        self._task: asyncio.Task[None] | None = None
        self._batch_seconds = metrics.KAFKA_BATCH_SECONDS.labels(group_id)
        self._retries = metrics.KAFKA_HANDLER_RETRIES.labels(group_id)
        self._progress = Progress(stall_seconds)
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe; the group join goes on in the background (``assigned`` is
        set once this member holds partitions). A join takes seconds, more after a member was
        killed (the group waits out its session): a service's API must not wait for it, and
        readiness already allows a member some time without partitions (see ``Progress``)."""
        await self._consumer.start()
        self._consumer.subscribe(self._topics)
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self._group_id}")

    async def stop(self) -> None:
        """Finish the batch in hand (and commit it), then leave the group."""
        self._stopping.set()
        if self._task:
            done, _ = await asyncio.wait({self._task}, timeout=STUCK_FETCH_SECONDS)
            if not done and self._fetching:
                # No batch in hand: a fetch whose broker went away while this member had not
                # yet been assigned its partitions waits for the assignment past its timeout.
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def problem(self) -> str | None:
        """Why this consumer is not consuming (None while it is)."""
        return "stopped" if not self.running else self._progress.problem()

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member holds right now (empty before it joins, or when the
        group has more members than partitions)."""
        return frozenset(self._consumer.assignment())

    async def _run(self) -> None:
        next_check = 0.0
        while not self._stopping.is_set():
            self._fetching = True
            batches = await self._consumer.getmany(timeout_ms=200, max_records=self._max_batch)
            self._fetching = False
            assigned = bool(self._consumer.assignment())
            if assigned:
                self.assigned.set()
            if not batches:
                if time.monotonic() >= next_check:  # at most once a second: a look per partition
                    next_check = time.monotonic() + 1.0
                    await resume_past_end(self._consumer, Resume.BEGINNING, self._group_id)
                    self._progress.polled(assigned=assigned, lag=await lag(self._consumer), records=0)
                continue
            records = [
                IncomingRecord.from_consumer_record(r)
                for partition_records in batches.values()
                for r in partition_records
            ]
            self._progress.polled(assigned=assigned, lag=None, records=len(records))
            started = time.perf_counter()
            topic_names = ",".join(sorted({r.topic for r in records}))
            self._progress.handling()
            with tracing.consume_span(topic_names, self._group_id, [r.headers for r in records]):
                handled = await self._handle(records)
            if not handled:
                return
            await self._commit(batches)
            self._progress.handled()
            self._batch_seconds.observe(time.perf_counter() - started)
            for topic in {r.topic for r in records}:
                metrics.KAFKA_CONSUMED.labels(topic, self._group_id).inc(
                    sum(1 for r in records if r.topic == topic)
                )
            self._record_lag(batches)

    async def _handle(self, records: list[IncomingRecord]) -> bool:
        """Handle a batch until it is durably done; False if asked to stop first."""
        attempt = 0
        while True:
            try:
                dead = list(await self._handler(records))
                await self._dead_letter(dead)
                return True
            except Exception as exc:
                if not is_transient(exc):
                    log.warning("batch_failed_isolating", group=self._group_id, error=repr(exc))
                    return await self._handle_one_by_one(records)
                attempt += 1
                self._retries.inc()
                self._progress.retrying(exc)
                log.warning("batch_retry", group=self._group_id, attempt=attempt, error=repr(exc))
                if not await self._backoff(attempt):
                    return False

    async def _handle_one_by_one(self, records: list[IncomingRecord]) -> bool:
        for record in records:
            attempt = 0
            while True:
                try:
                    dead = list(await self._handler([record]))
                except Exception as exc:
                    if is_transient(exc):
                        attempt += 1
                        self._retries.inc()
                        self._progress.retrying(exc)
                        if not await self._backoff(attempt):
                            return False
                        continue
                    dead = [DeadLetter(record, "processing_error", f"{type(exc).__name__}: {exc}")]
                try:
                    await self._dead_letter(dead)
                    break
                except Exception as exc:
                    attempt += 1
                    log.warning("dead_letter_retry", group=self._group_id, error=repr(exc))
                    if not await self._backoff(attempt):
                        return False
        return True

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        await publish(self._producer, [d.to_outgoing() for d in dead])
        for d in dead:
            d.sent()

    async def _backoff(self, attempt: int) -> bool:
        """Wait before retrying; False when the loop is stopping."""
        delay = min(self._max_retry_delay, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            return False
        except TimeoutError:
            return True

    async def _commit(self, batches: dict[TopicPartition, list[object]]) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}  # type: ignore[attr-defined]
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another member, which resumes from the last
            # commit: the batch is handled again there, which idempotent handlers allow.
            log.warning("commit_failed", group=self._group_id, error=repr(exc))

    def _record_lag(self, batches: dict[TopicPartition, list[object]]) -> None:
        for tp, records in batches.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - records[-1].offset - 1)  # type: ignore[attr-defined]
                metrics.KAFKA_CONSUMER_LAG.labels(self._group_id, tp.topic, str(tp.partition)).set(lag)


class TailReader:
    """Follows topics without a consumer group: every partition is assigned to this reader,
    nothing is committed, and where reading starts is fixed when :meth:`start` returns.

    For readers that must see every partition whatever other processes do (each serving
    replica hears every model event; an online learner reads the whole feature stream) and
    for people watching a topic. The topics must exist: :meth:`start` waits up to
    ``metadata_timeout`` seconds for the broker to list them (a topic just created can take
    a moment), then raises :class:`LookupError` naming the first one missing.

    When the log moves behind the reader (the broker lost its records), reading resumes at
    ``resume``: the end by default, for readers that need only what happens from now on.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        client_id: str,
        from_beginning: bool = False,
        fetch_max_wait_ms: int = 100,
        max_partition_fetch_bytes: int = 1024 * 1024,
        metadata_timeout: float = 5.0,
        resume: Resume = Resume.END,
        stall_seconds: float = STALL_SECONDS,
        security: KafkaSecurity = PLAINTEXT,
    ):
        self.topics = list(topics)
        self._name = client_id
        self._resume = resume
        # A reader that hears nothing from the broker still has what it read: serving's
        # model-event listener keeps serving (and re-reads the registry every minute), and
        # a broker away must not make every replica unready at once.
        self._progress = Progress(stall_seconds, silence_is_stuck=False)
        self._next_check = 0.0
        self._from_beginning = from_beginning
        self._metadata_timeout = metadata_timeout
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset=resume.reset_policy,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            **security.aiokafka(),
        )
        self.assignment: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect, assign every partition, and fix each one's position (its end, or its
        beginning with ``from_beginning``), so no record published after this is missed."""
        await self._consumer.start()
        self.assignment = await self._partitions()
        self._consumer.assign(self.assignment)
        if self._from_beginning:
            await self._consumer.seek_to_beginning(*self.assignment)
        else:
            await self._consumer.seek_to_end(*self.assignment)
        for partition in self.assignment:
            await self._consumer.position(partition)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[IncomingRecord]:
        """What arrived since the last read, waiting up to ``timeout_ms`` when nothing has."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        records = [IncomingRecord.from_consumer_record(r) for rs in batches.values() for r in rs]
        if records:
            self._progress.polled(assigned=True, lag=None, records=len(records))
        elif time.monotonic() >= self._next_check:  # at most once a second: a look per partition
            self._next_check = time.monotonic() + 1.0
            await resume_past_end(self._consumer, self._resume, self._name)
            self._progress.polled(assigned=True, lag=await lag(self._consumer), records=0)
        return records

    def problem(self) -> str | None:
        """Why this reader is not reading (None while it is)."""
        return self._progress.problem()

    def end(self, partition: TopicPartition) -> int | None:
        """The partition's end as the last fetch answer gave it (None before one did)."""
        end = self._consumer.highwater(partition)
        return None if end is None else int(end)

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record :meth:`read` returns from ``partition``."""
        return int(await self._consumer.position(partition))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""
        self._consumer.seek(partition, offset)

    async def offsets_at(self, timestamp_ms: int) -> dict[TopicPartition, int]:
        """Per partition, the first offset published at or after ``timestamp_ms`` (the end
        when nothing was)."""
        found = await self._consumer.offsets_for_times(dict.fromkeys(self.assignment, max(0, timestamp_ms)))
        ends = await self._consumer.end_offsets(self.assignment)
        return {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in self.assignment}

    async def _partitions(self) -> list[TopicPartition]:
        deadline = time.monotonic() + self._metadata_timeout
        while True:
            await self._consumer.topics()  # fresh metadata
            missing = [t for t in self.topics if not self._consumer.partitions_for_topic(t)]
            if not missing:
                return [
                    TopicPartition(topic, p)
                    for topic in self.topics
                    for p in sorted(self._consumer.partitions_for_topic(topic))
                ]
            if time.monotonic() >= deadline:
                raise LookupError(missing[0])
            await asyncio.sleep(0.2)


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int = 4,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    *,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create the topics that do not exist yet (an existing topic is left as it is)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="mlops-admin", **security.aiokafka()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=dict(configs or {}),
            )
            for name in topics
        ]
        missing = [t for t in missing if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
