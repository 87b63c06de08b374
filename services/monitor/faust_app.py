"""What the monitor gives faust: raw bytes in and out, and no per-message statistics.

Both go through faust's public extension points (a :class:`faust.Schema` and a sensor),
so nothing here depends on faust's internals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import faust
from faust.sensors.monitor import Monitor as FaustMonitor
from faust.types import TP, AppT, Message


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
        # The one time kept: faust's watchdog reads it, and without it logs every partition
        # with a backlog as "Stream has not started processing", at ERROR, forever. The
        # stages' messages carry batches, so this is one clock read per batch.
        self.stream_inbound_time[tp] = time.monotonic()
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None
