"""Refused calls in the audit log, with repeated denials aggregated so a caller without
access cannot grow the log without bound.

Calls refused for their token (``unauthenticated``) or scope (``denied``) come from
callers the registry does not let in, so their volume is theirs to choose: the first of
a kind (same actor, transport, action, outcome and team) in a window is written at once,
the ones after it in the same window are counted in memory and added to that record
(``count``, ``last_at``) every few seconds and when the registry stops. A crash loses at
most those few seconds of counts, never a first refusal. Anonymous callers are one
actor, so a flood of calls without a token is one record a minute. Other refusals
(invalid input, a lost compare-and-set ...) come from callers allowed to make changes,
each of which is audited anyway, and are written one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import PlatformError
from services.common.logging import get_logger
from services.registry.store.audit import AuditEntry, AuditRepository

log = get_logger(__name__)

Key = tuple[str, str, str, str, str]
AGGREGATED = frozenset({"denied", "unauthenticated"})
"""The outcomes whose repeats are counted rather than written."""


@dataclass
class _Open:
    """The record of one kind of refusal in the current window."""

    window: int
    record_id: object | None = None
    """None while its first refusal is being written."""
    pending: int = 0
    last_at: datetime | None = None


class Refusals:
    """Writes refusals to the audit log, one record per kind per ``window_seconds``."""

    def __init__(
        self,
        audit: AuditRepository,
        window_seconds: float,
        *,
        flush_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        self._audit = audit
        self._window = window_seconds
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._open: dict[Key, _Open] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def record(self, entry: AuditEntry) -> None:
        if entry.outcome not in AGGREGATED:
            await self._write(entry)
            return
        key = (entry.actor, entry.transport, entry.action, entry.outcome, entry.team)
        window = int(self._clock() // self._window)
        current = self._open.get(key)
        if current is not None and current.window == window:
            current.pending += 1
            current.last_at = entry.occurred_at
            return
        opened = self._open[key] = _Open(window)
        opened.record_id = await self._write(entry)
        if opened.record_id is None and self._open.get(key) is opened:
            del self._open[key]

    async def _write(self, entry: AuditEntry) -> object | None:
        """Append ``entry``; its id, or None when the database could not take it (logged)."""
        try:
            return await self._audit.add(entry)
        except PlatformError as exc:
            log.error("audit_write_failed", action=entry.action, resource=entry.resource, error=repr(exc))
            return None

    async def flush(self) -> None:
        """Add the repeats counted so far to their records; forget windows that ended."""
        window = int(self._clock() // self._window)
        for key, opened in list(self._open.items()):
            if opened.pending and opened.record_id is not None and opened.last_at is not None:
                count, opened.pending = opened.pending, 0
                try:
                    await self._audit.add_repeats(opened.record_id, count, opened.last_at)
                except PlatformError as exc:
                    opened.pending += count
                    log.warning("audit_repeats_not_written", action=key[2], count=count, error=repr(exc))
                    continue
            if opened.window < window and not opened.pending:
                del self._open[key]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="refusal-flusher")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._flush_seconds)
            await self.flush()

    async def stop(self) -> None:
        """Write what is counted, then stop."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        else:
            await self.flush()
