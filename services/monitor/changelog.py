"""The join's faust table: one changelog message per batch, not one per key.

Faust's tables send a changelog message for every key written, through its producer
buffer: at two writes per joined pair that costs more than everything else the monitor
does. This table keeps what faust does for state (partition assignment, recovery from the
changelog before the stream resumes, for exactly the partitions this process owns, and the
move of a partition with its state on a rebalance) but collects the writes of a batch and
sends them as one ``JoinTableChanges`` message per partition (``protos/mlops/v1/monitor.proto``).
It holds :class:`~services.monitor.join.JoinEntry` values as they are: only the changelog
is encoded, so a read costs a dictionary look-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.types import EventT
from google.protobuf.message import DecodeError

from services.common.logging import get_logger
from services.common.proto.mlops.v1 import monitor_pb2
from services.monitor import internal
from services.monitor.faust_app import RawBytes
from services.monitor.join import JoinEntry

log = get_logger(__name__)


class JoinTable(faust.Table[str, Any]):
    """For an agent that handles one partition's batch per event and calls
    :meth:`flush_changelog` before taking the next: faust commits the event's offset only
    after the producer has flushed, so a batch's writes are durable before its commit."""

    def __init__(self, app: faust.App, **kwargs: Any):
        # Raw bytes on the changelog: this table encodes and decodes its own messages.
        super().__init__(app, schema=RawBytes(), **kwargs)
        self.unflushed: dict[int, dict[str, JoinEntry | None]] = {}
        """Writes since the last flush, per partition (None: deleted)."""

    def event_partition(self) -> int:
        event = faust.current_event()
        if event is None:
            raise RuntimeError("table modified outside a stream event")
        return int(event.message.partition)

    def on_key_set(self, key: str, value: Any) -> None:
        self.unflushed.setdefault(self.event_partition(), {})[key] = value

    def on_key_del(self, key: str) -> None:
        self.unflushed.setdefault(self.event_partition(), {})[key] = None

    async def flush_changelog(self) -> None:
        """Send what this batch wrote, one changelog message per partition written."""
        topic = self.changelog_topic.get_topic_name()
        for partition, writes in self.unflushed.items():
            changes = monitor_pb2.JoinTableChanges(
                deleted=[key for key, value in writes.items() if value is None]
            )
            for key, value in writes.items():
                if value is not None:
                    changes.set[key].CopyFrom(internal.entry_message(value))
            await self.app.producer.send(topic, None, changes.SerializeToString(), partition, None, None)
        self.unflushed.clear()

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        """Rebuild from changelog messages written by :meth:`flush_changelog`."""
        for event in batch:
            try:
                changes = monitor_pb2.JoinTableChanges.FromString(event.value)
            except DecodeError:
                # Written by the monitor before its internal messages were protobuf (JSON):
                # its pending entries are dropped (those rows will not join) rather than
                # the monitor refusing to start.
                log.warning("join_changelog_unreadable", offset=event.message.offset)
                continue
            for key, entry in changes.set.items():
                self.data[key] = internal.entry(entry)
            for key in changes.deleted:
                self.data.pop(key, None)
