"""A faust table whose changelog is written one message per batch, not one per key.

Faust's tables send a changelog message for every key written, through its producer
buffer: at two writes per joined pair that costs more than everything else the monitor
does. This table keeps faust's partition assignment and recovery (the table is rebuilt
from its changelog before the stream resumes, for exactly the partitions this process
owns) but collects the writes of a batch and sends them as one message per partition:
``{"set": {key: value}, "del": [key]}``, JSON like the rest of the monitor's topics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import faust
from faust.types import EventT


class BatchedChangelogTable(faust.Table[str, Any]):
    """A table for agents that handle one partition's batch per event and call
    :meth:`flush_changelog` before taking the next: faust commits the event's offset only
    after the producer has flushed, so a batch's writes are durable before its commit."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._dirty: dict[int, dict[str, Any]] = {}

    def _partition(self) -> int:
        event = faust.current_event()
        if event is None:
            raise RuntimeError("table modified outside a stream event")
        return int(event.message.partition)

    def on_key_set(self, key: str, value: Any) -> None:
        self._dirty.setdefault(self._partition(), {})[key] = value

    def on_key_del(self, key: str) -> None:
        self._dirty.setdefault(self._partition(), {})[key] = None

    async def flush_changelog(self) -> None:
        """Send what this batch wrote, one changelog message per partition written."""
        topic = self.changelog_topic.get_topic_name()
        for partition, writes in self._dirty.items():
            value = {
                "set": {k: v for k, v in writes.items() if v is not None},
                "del": [k for k, v in writes.items() if v is None],
            }
            body = json.dumps(value, separators=(",", ":")).encode()
            await self.app.producer.send(topic, None, body, partition, None, None)
        self._dirty.clear()

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        """Rebuild from changelog messages written by :meth:`flush_changelog`."""
        for event in batch:
            change = event.value
            if isinstance(change, bytes | str):
                change = json.loads(change)
            if not isinstance(change, dict):
                continue
            for key, value in change.get("set", {}).items():
                self.data[key] = value
            for key in change.get("del", ()):
                self.data.pop(key, None)
