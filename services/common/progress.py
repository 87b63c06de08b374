"""Whether a consumer is consuming, and what it does when its log moved behind it.

Every consumer of the platform (the consumer loop, tail readers, the monitor's faust
streams) uses these two things:

- :func:`resume_past_end`: a position past the end of a partition's log means the broker
  no longer holds the records before it (a broker that keeps them in memory restarted, a
  topic was deleted and created again, a cluster came back from a backup). Apache Kafka
  answers a fetch there with OFFSET_OUT_OF_RANGE, which aiokafka resolves with the
  consumer's reset policy; the embedded broker answers with no records, forever. So each
  consumer checks when a fetch brings nothing, and resumes from a defined point: the new
  beginning for consumer groups, whose every record is work to do, or the end for readers
  that need only what happens from now on. Each move is logged once, with the partitions
  and offsets, as ``log_moved_behind``.
- :class:`Progress`: readiness that tells the truth. A consumer that holds no partition,
  keeps retrying a batch, has records waiting that it does not consume, or hears nothing
  from the broker (a network cut) is stuck, and after ``stall_seconds`` its service reports
  why instead of "ready".
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from services.common import metrics
from services.common.logging import get_logger

log = get_logger(__name__)

STALL_SECONDS = 60.0
"""How long a consumer may make no progress before its service stops being ready."""
ANSWERED_SECONDS = 10.0
"""How recent a partition's last fetch answer must be for its lag to be known: a broker
answers a fetch within ``fetch_max_wait_ms``, at most 5 s in every service's settings."""


class Resume(enum.StrEnum):
    """Where a consumer resumes when its log moved behind it."""

    BEGINNING = "beginning"
    """The new log's first record: consumer groups, and readers that act on every record."""
    END = "end"
    """The log's end: readers that need only what happens from now on."""

    @property
    def reset_policy(self) -> str:
        """aiokafka's ``auto_offset_reset`` for the same point (Apache Kafka's out-of-range)."""
        return "earliest" if self is Resume.BEGINNING else "latest"


async def resume_past_end(
    consumer: AIOKafkaConsumer, resume: Resume, name: str
) -> dict[TopicPartition, tuple[int, int]]:
    """Move the partitions whose position is past the end of their log to ``resume``.

    Returns, per partition moved, the position it had and the one it has now. The end is the
    high watermark of the last fetch answer, so a partition no fetch has answered yet is
    left alone.
    """
    behind: dict[TopicPartition, int] = {}
    for tp, position, end in await _positions(consumer):
        if position > end:
            behind[tp] = position
    if not behind:
        return {}
    if resume is Resume.BEGINNING:
        await consumer.seek_to_beginning(*behind)
    else:
        await consumer.seek_to_end(*behind)
    moved = {tp: (old, int(await consumer.position(tp))) for tp, old in behind.items()}
    log_moved(name, resume, moved, {tp: consumer.highwater(tp) for tp in moved})
    return moved


def log_moved(
    name: str,
    resume: Resume,
    moved: Mapping[TopicPartition, tuple[int, int]],
    ends: Mapping[TopicPartition, int | None],
) -> None:
    """One warning for a consumer whose partitions resumed, and a count per topic."""
    for tp in moved:
        metrics.KAFKA_POSITIONS_RESET.labels(name, tp.topic).inc()
    log.warning(
        "log_moved_behind",
        consumer=name,
        resume=str(resume),
        topics=sorted({tp.topic for tp in moved}),
        partitions=[
            f"{tp.topic}[{tp.partition}] at {old}, log end {ends.get(tp)}, resumed at {new}"
            for tp, (old, new) in sorted(moved.items())
        ],
        detail="the broker no longer holds the records before this position "
        "(restarted without its data, or the topic was recreated)",
    )


async def lag(consumer: AIOKafkaConsumer) -> int | None:
    """Records published and not read yet over the assigned partitions; None when no fetch
    answered for any of them in the last :data:`ANSWERED_SECONDS`: before the first answer,
    or while the broker is out of reach, when the last answer's lag (often 0) is stale."""
    since_ms = time.time() * 1000 - ANSWERED_SECONDS * 1000
    positions = [p for p in await _positions(consumer) if (_answered_at(consumer, p[0]) or 0) >= since_ms]
    return sum(max(0, end - position) for _, position, end in positions) if positions else None


def _answered_at(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """When (epoch ms) a fetch answer last told ``tp``'s end; None if it was revoked since."""
    try:
        return consumer.last_poll_timestamp(tp)  # type: ignore[no-any-return]
    except (AssertionError, IllegalStateError):
        return None


async def _positions(consumer: AIOKafkaConsumer) -> list[tuple[TopicPartition, int, int]]:
    """(partition, position, end) of the assigned partitions a fetch answer told the end of."""
    found = []
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # revoked by a rebalance since assignment() was read
            continue
        found.append((tp, int(position), int(end)))
    return found


class Progress:
    """Whether a consumer is consuming; :meth:`problem` says why not.

    Stuck, for longer than ``stall_seconds``: holding no partition; retrying one batch;
    records waiting (lag) while none is consumed; or the lag unknown, no fetch answered (the
    broker out of reach) unless ``silence_is_stuck`` is off. The last two only while no
    batch is being handled (a long training job is work, not a stall). Caught up, with
    nothing to read, is progress.

    >>> now = [0.0]
    >>> progress = Progress(stall_seconds=60, clock=lambda: now[0])
    >>> progress.polled(assigned=True, lag=0, records=0)
    >>> now[0] = 300.0
    >>> progress.polled(assigned=True, lag=0, records=0)
    >>> progress.problem() is None  # caught up and idle
    True
    >>> progress.polled(assigned=True, lag=12, records=0)
    >>> now[0] = 400.0
    >>> progress.polled(assigned=True, lag=12, records=0)
    >>> progress.problem()
    '12 records behind and none consumed for 100s'
    >>> progress.polled(assigned=True, lag=5, records=7)
    >>> progress.problem() is None
    True
    >>> now[0] = 500.0  # a network cut: fetches go unanswered, the lag is unknown
    >>> progress.polled(assigned=True, lag=None, records=0)
    >>> progress.problem()
    'no answer from the broker for 100s'
    """

    def __init__(
        self,
        stall_seconds: float = STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        *,
        silence_is_stuck: bool = True,
    ):
        self._stall = stall_seconds
        self._silence_is_stuck = silence_is_stuck
        self._clock = clock
        now = clock()
        self._progressed = now
        self._unassigned_since: float | None = now
        self._retrying_since: float | None = None
        self._answered = now
        self._error = ""
        self._busy = False
        self.lag = 0

    def polled(self, *, assigned: bool, lag: int | None, records: int) -> None:
        """A fetch returned ``records``; ``lag`` is what is left to read (None: unknown)."""
        now = self._clock()
        if assigned:
            self._unassigned_since = None
        elif self._unassigned_since is None:
            self._unassigned_since = now
        if lag is not None:
            self.lag = lag
        if records or lag is not None:
            self._answered = now
        if records or (assigned and lag == 0):
            self._progressed = now

    def handling(self) -> None:
        """A batch is being handled."""
        self._busy = True

    def retrying(self, error: BaseException) -> None:
        """The batch in hand failed for a reason that passes (a dependency is away)."""
        if self._retrying_since is None:
            self._retrying_since = self._clock()
        self._error = repr(error)[:200]

    def handled(self) -> None:
        """The batch in hand is done (or given up on at a stop)."""
        self._busy = False
        self._retrying_since = None
        # The broker has had no chance to answer a fetch while the batch was being handled.
        self._progressed = self._answered = self._clock()

    def problem(self) -> str | None:
        now = self._clock()
        if self._retrying_since is not None and now - self._retrying_since > self._stall:
            return f"retrying a batch for {now - self._retrying_since:.0f}s: {self._error}"
        if self._unassigned_since is not None and now - self._unassigned_since > self._stall:
            return f"no partition assigned for {now - self._unassigned_since:.0f}s"
        if self._busy:
            return None
        if self._silence_is_stuck and now - self._answered > self._stall:
            return f"no answer from the broker for {now - self._answered:.0f}s"
        if self.lag > 0 and now - self._progressed > self._stall:
            return f"{self.lag} records behind and none consumed for {now - self._progressed:.0f}s"
        return None
