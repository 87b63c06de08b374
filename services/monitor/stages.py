"""Whether the monitor's faust stages consume, and their recovery when their logs moved
behind them.

When the broker lost its records, a position past the end of a partition would wait there
forever (the embedded broker answers such fetches with nothing), so the stages start again
at the new beginning once the monitor's own topics exist again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Set

from aiokafka import TopicPartition
from faust.types import ConsumerT

from services.common.progress import Progress, Resume, log_moved

LOG_CHECK_SECONDS = 1.0
"""How often the faust stages' positions are compared with their logs' ends."""


async def watch_stage_logs(
    consumer: ConsumerT,
    topics: Set[str],
    group: str,
    progress: Progress,
    handled: Callable[[], int],
    recreate: Callable[[], Awaitable[None]],
) -> None:
    """Keep ``progress`` of ``consumer`` on ``topics`` (``handled`` counts the messages the
    stages took), and resume partitions whose logs moved behind them, after ``recreate``."""
    seen = handled()
    while True:
        await asyncio.sleep(LOG_CHECK_SECONDS)
        assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        behind: dict[TopicPartition, tuple[int, int]] = {}
        ends: dict[TopicPartition, int | None] = {}
        lag = 0
        for tp in assigned:
            end = consumer.highwater(tp)
            position = await consumer.position(tp)
            if end is None or position is None:
                continue
            ends[TopicPartition(tp.topic, tp.partition)] = end
            lag += max(0, end - position)
            if position > end:
                behind[TopicPartition(tp.topic, tp.partition)] = (position, 0)
        now = handled()
        progress.polled(assigned=bool(assigned), lag=lag if ends else None, records=now - seen)
        seen = now
        if behind:
            await recreate()
            for tp in behind:
                await consumer.seek(tp, 0)
            log_moved(group, Resume.BEGINNING, behind, ends)
