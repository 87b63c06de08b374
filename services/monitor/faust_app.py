"""The monitor's faust application: faust's aiokafka transport tuned for the monitor's
stages (a short fetch wait, one race per fetched batch instead of per message), raw bytes
in and out, and none of faust's per-message statistics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from aiokafka import TopicPartition
from faust.sensors.monitor import Monitor as FaustMonitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, Message
from mode import Service

from services.common.events import IncomingRecord
from services.common.progress import Progress, Resume, log_moved


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer with a short fetch wait.

    Faust fixes ``fetch_max_wait_ms`` at 1.5 s, and the embedded broker holds a fetch on
    a quiet partition for all of it, which would add up to seconds per stage to every
    detection. The attribute is read when the consumer starts, just after this.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(StreamApp, self.app).fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, handing each fetched batch to the streams in one step.

    Faust's own loop races every single message against "flow suspended" (four tasks and
    an ``asyncio.wait`` per message), which cost more CPU than everything else the monitor
    does with a record: a no-op agent read 2,600 records/s where a bare aiokafka consumer
    read 90,000. Here one race covers each fetched batch, with the same effect: when a
    rebalance suspends the flow, what is left of the batch is not delivered, and the
    consumer seeks back to the committed offsets before fetching again.

    When a fetch brings nothing it also looks, at most once a second, for partitions whose
    position is past their log's end (see :mod:`services.common.progress`), and keeps the
    :class:`Progress` the monitor's readiness reads.
    """

    progress: Progress | None = None
    _next_check = 0.0

    def _new_consumer_thread(self) -> Any:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        if self.progress is None:
            self.progress = Progress()
        while not (stopped() or fetcher_stopped()):
            batch = [pair async for pair in self.getmany(timeout=1.0)]
            # getmany may return at once again and again: let other tasks run in between.
            await self.sleep(0)
            if batch and not self.should_stop:
                self.progress.polled(assigned=True, lag=None, records=len(batch))
                await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
            elif not batch and time.monotonic() >= self._next_check:
                self._next_check = time.monotonic() + 1.0  # at most once a second
                await self._resume_past_end()

    async def _resume_past_end(self) -> None:
        """Partitions whose position is past their log's end (the broker lost its records)
        start again at the new beginning, faust's bookkeeping of them with them: what it read,
        acked and committed refers to offsets of the lost log, and would skip or refuse to
        commit the new ones."""
        assert self.progress is not None
        ends: dict[TP, int] = {}
        behind: dict[TP, int] = {}
        lag = 0
        for tp in self.assignment():
            end = self.highwater(tp)
            position = await self.position(tp)
            if end is None or position is None:
                continue
            ends[tp] = end
            lag += max(0, end - position)
            if position > end:
                behind[tp] = position
        self.progress.polled(assigned=bool(self.assignment()), lag=lag if ends else None, records=0)
        if not behind:
            return
        for tp in behind:
            for bookkeeping in (self._acked, self._acked_index, self._gap, self._committed_offset):
                bookkeeping.pop(tp, None)
            await self.seek(tp, 0)  # the log's first offset, or the reset policy's (earliest)
        log_moved(
            self.app.conf.id,
            Resume.BEGINNING,
            {tp: (old, 0) for tp, old in behind.items()},
            cast(dict[TopicPartition, int | None], ends),
        )
        app = cast(StreamApp, self.app)
        if app.on_log_lost is not None:
            await app.on_log_lost()

    async def _deliver(self, batch: list[tuple[TP, Message]]) -> None:
        """Hand a fetched batch to the streams in order, keeping faust's offset bookkeeping:
        the read offset per partition, gaps in acked topics, commits every n acks, and when
        each partition's stream last took a record (once per batch: :class:`StatisticsOff`
        keeps no per-message times, and without them faust's watchdog logs every partition
        with a backlog as "Stream has not started processing", at ERROR, forever)."""
        inbound = self.app.monitor.stream_inbound_time
        now = time.monotonic()
        for tp in {tp for tp, _ in batch}:
            inbound[tp] = now
        read_offsets = self._read_offset
        for tp, message in batch:
            offset = message.offset
            read = read_offsets[tp]
            if read is not None and offset < read:
                continue  # already delivered before a seek back
            if read and offset - read > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, read + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.callback(message)
            read_offsets[tp] = offset


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class RawBytes(faust.Schema[bytes, bytes]):
    """Keys and values as the bytes on the wire, headers as they came: the monitor decodes
    them itself, so faust's codec lookups per message are skipped."""

    def compile(self, app: AppT, **_: Any) -> Any:
        event_class = cast(Callable[..., Any], app.conf.Event)

        async def decode(message: Message, *, propagate: bool = False) -> Any:
            return event_class(app, message.key, message.value, message.headers, message)

        return decode


class StatisticsOff(FaustMonitor):
    """Faust's default sensor without its per-message statistics (rates, latencies kept for
    faust's web views, which the monitor does not serve): two dict updates and a clock read
    per message and stream, for figures nobody reads. Offsets and commits are still tracked."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None


class StreamApp(faust.App):
    """A faust app whose consumer waits at most ``fetch_max_wait_ms`` for new data."""

    fetch_max_wait_ms = 1500
    on_log_lost: Callable[[], Awaitable[None]] | None = None
    """Called when the consumer finds its logs moved behind it: the broker lost its records,
    and the topics only the monitor creates (its internal ones) may be gone with them."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def incoming(event: faust.types.EventT[bytes]) -> IncomingRecord:
    message = event.message
    headers = message.headers
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    return IncomingRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple(pairs),
        timestamp_ms=int(message.timestamp * 1000),
    )
