"""Reading the platform's topics in tests: wait on what has arrived, never sleep for it.

:class:`TopicReader` follows one topic from its start for as long as a test or fixture
needs it; :func:`read_records` and :func:`read_to_end` are the one-shot reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast, overload

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import Message

from services.common.events import Envelope, IncomingRecord, decode

T = TypeVar("T")
M = TypeVar("M", bound=Message)


class TopicReader(Generic[T]):
    """Reads ``topic`` from its start in the background, without a consumer group (so
    no group join to wait for), and lets a test wait on what has arrived.

    Without ``message_type`` it holds the records as consumed; with one, it opens each
    CloudEvents envelope and holds the messages, their envelopes in :attr:`envelopes`.
    A record that is not such an envelope fails the next wait with its
    :class:`~services.common.events.EnvelopeError`.

    ``within`` is how long a wait lasts unless the call says otherwise. Use it as an
    async context manager, or call :meth:`start` and :meth:`stop`.
    """

    @overload
    def __init__(
        self: TopicReader[IncomingRecord],
        bootstrap: str,
        topic: str,
        message_type: None = None,
        *,
        within: float = 20.0,
        fetch_max_wait_ms: int = 20,
    ) -> None: ...

    @overload
    def __init__(
        self: TopicReader[M],
        bootstrap: str,
        topic: str,
        message_type: type[M],
        *,
        within: float = 20.0,
        fetch_max_wait_ms: int = 20,
    ) -> None: ...

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        message_type: type[Message] | None = None,
        *,
        within: float = 20.0,
        fetch_max_wait_ms: int = 20,
    ) -> None:
        self.topic = topic
        self.received: list[T] = []
        """Everything read so far: records, or messages when a ``message_type`` is given."""
        self.envelopes: list[Envelope[Any]] = []
        """The envelopes of :attr:`received` when a ``message_type`` is given (ids, partitions)."""
        self._bootstrap = bootstrap
        self._message_type = message_type
        self._within = within
        # The broker holds an idle fetch this long: it bounds how late a wait sees a record.
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._failure: BaseException | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self._bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._read(), name=f"reader:{self.topic}")

    async def stop(self) -> None:
        assert self._consumer is not None and self._task is not None, "stop() before start()"
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_for(
        self, match: Callable[[T], bool], count: int = 1, within: float | None = None
    ) -> list[T]:
        """What has arrived that ``match``es, once at least ``count`` of it has."""

        def found() -> list[T]:
            return [item for item in self.received if match(item)]

        await self._wait(lambda: len(found()) >= count, within, f"{count} matching")
        return found()

    async def wait_until(self, condition: Callable[[list[T]], bool], within: float | None = None) -> list[T]:
        """Everything that has arrived, once ``condition`` holds for it."""
        await self._wait(lambda: condition(self.received), within, "the condition")
        return list(self.received)

    async def _wait(self, done: Callable[[], bool], within: float | None, what: str) -> None:
        within = self._within if within is None else within
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: self._failure is not None or done())
        except TimeoutError:
            raise TimeoutError(
                f"{self.topic}: {what} not there after {within:g} s ({len(self.received)} read)"
            ) from None
        if self._failure is not None:
            raise self._failure

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            records = [IncomingRecord.from_consumer_record(r) for rs in batches.values() for r in rs]
            if not records:
                continue
            async with self._changed:
                try:
                    for record in records:
                        self._keep(record)
                except Exception as exc:
                    self._failure = exc
                    raise
                finally:
                    self._changed.notify_all()

    def _keep(self, record: IncomingRecord) -> None:
        if self._message_type is None:
            self.received.append(cast(T, record))
            return
        envelope = decode(record, self._message_type)
        self.envelopes.append(envelope)
        self.received.append(cast(T, envelope.message))


async def read_records(bootstrap: str, topic: str, count: int, within: float = 30.0) -> list[IncomingRecord]:
    """The records of ``topic`` from its start, once there are at least ``count``."""
    async with TopicReader(bootstrap, topic) as reader:
        return await reader.wait_until(lambda records: len(records) >= count, within)


async def read_to_end(bootstrap: str, topic: str, within: float = 20.0) -> list[IncomingRecord]:
    """Every record of ``topic`` up to its end now.

    The end is each partition's high watermark as fetch responses report it: the embedded
    broker answers ListOffsets with the last batch's base offset + 1, short of the real end
    after a batch of several records.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[IncomingRecord] = []
        async with asyncio.timeout(within):
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                records += [IncomingRecord.from_consumer_record(r) for rs in batches.values() for r in rs]
                positions = {tp: await consumer.position(tp) for tp in partitions}
                if all(
                    (end := consumer.highwater(tp)) is not None and at >= end for tp, at in positions.items()
                ):
                    return records
    finally:
        await consumer.stop()
