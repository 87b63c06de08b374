"""Revoked tokens: a list every service checks on every call, kept in memory and in step
with the registry (which records revocations) by asking it every few seconds.

Only revocations of tokens that have not expired yet are kept: once a token expires the
verifier refuses it anyway, so the list stays as small as the number of live revoked
tokens. A service that cannot reach the registry keeps the list it has (revocations are
made at the registry, so none can be missed while it is away) and says so in its log
and in ``mlops_auth_revocations_synced_timestamp_seconds``.

>>> revoked = RevocationList(clock=lambda: 100.0)
>>> revoked.add([Revocation("t1", revoked_at=90.0, expires_at=200.0), Revocation("t0", 80.0, 95.0)])
1
>>> revoked.revoked("t1"), revoked.revoked("t0"), revoked.revoked("")
(True, False, False)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Gauge

from services.common.logging import get_logger

log = get_logger(__name__)

REVOKED_TOKENS = Gauge(
    "mlops_auth_revoked_tokens",
    "Revoked tokens not expired yet, as this process knows them.",
    multiprocess_mode="livemostrecent",  # a replica's workers: the list as last read
)
REVOCATIONS_SYNCED = Gauge(
    "mlops_auth_revocations_synced_timestamp_seconds",
    "When this process last read the revocation list from the registry (0: never).",
    # A replica's workers: the stalest, as one that stopped syncing still admits revoked tokens.
    multiprocess_mode="livemin",
)


@dataclass(frozen=True)
class Revocation:
    token_id: str
    revoked_at: float
    """Epoch seconds."""
    expires_at: float
    """When the revoked token would have expired (epoch seconds)."""


class RevocationList:
    """Token ids revoked before they expire."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def revoked(self, token_id: str) -> bool:
        return bool(token_id) and token_id in self._expiry

    def add(self, revocations: Iterable[Revocation]) -> int:
        """Record ``revocations`` (and forget expired ones); returns how many were new."""
        now = self._clock()
        new = 0
        for revocation in revocations:
            if revocation.expires_at > now and revocation.token_id not in self._expiry:
                new += 1
            if revocation.expires_at > now:
                self._expiry[revocation.token_id] = revocation.expires_at
        for token_id in [t for t, expires in self._expiry.items() if expires <= now]:
            del self._expiry[token_id]
        REVOKED_TOKENS.set(len(self._expiry))
        return new

    def __len__(self) -> int:
        return len(self._expiry)


RevocationSource = Callable[[float], Awaitable[Sequence[Revocation]]]
"""Revocations made at or after an epoch-seconds instant (0: every one not expired)."""


class RevocationPoller:
    """Keeps a :class:`RevocationList` in step with a source, asking every ``interval``.

    Each read asks for what was revoked since the newest revocation already seen, less
    ``overlap``: a revocation committed late with an earlier time is still caught.
    """

    def __init__(
        self,
        source: RevocationSource,
        revocations: RevocationList,
        interval: float,
        *,
        overlap: float = 60.0,
    ):
        self._source = source
        self._revocations = revocations
        self._interval = interval
        self._overlap = overlap
        self._since = 0.0
        self._failing = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        """Set once the list was read in full at least once."""

    async def poll(self) -> None:
        """Read what was revoked since the last read; raises what the source raises."""
        revocations = await self._source(max(0.0, self._since - self._overlap) if self._since else 0.0)
        new = self._revocations.add(revocations)
        if revocations:
            self._since = max(self._since, max(r.revoked_at for r in revocations))
        REVOCATIONS_SYNCED.set(time.time())
        self.synced.set()
        if new:
            log.info("tokens_revoked", new=new, known=len(self._revocations))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocation-poller")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll()
            except Exception as exc:
                if not self._failing:
                    log.warning("revocations_unreadable", error=repr(exc), keeping=len(self._revocations))
                self._failing = True
            else:
                if self._failing:
                    log.info("revocations_readable_again", known=len(self._revocations))
                self._failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
