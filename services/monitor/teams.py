"""Which team owns each watched model, so a caller sees the drift status of its teams'
models only (adapter: the registry's ``GetModel``, read scope).

A model's team does not change, so an answer is kept for ``ttl_seconds``; a model the
registry does not know (or cannot be asked about) has no team, and only administrators
see it until the registry is asked again, ``retry_seconds`` later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from services.common.auth import Principal, Scope
from services.common.errors import PlatformError
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import registry_pb2

log = get_logger(__name__)


class ModelSource(Protocol):
    async def get_model(self, name: str) -> registry_pb2.Model: ...


class ModelTeams:
    """Models' teams, read from the registry and remembered a while."""

    def __init__(
        self,
        registry: ModelSource,
        ttl_seconds: float = 300.0,
        retry_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._registry = registry
        self._ttl = ttl_seconds
        self._retry = retry_seconds
        self._clock = clock
        self._known: dict[str, tuple[str | None, float]] = {}

    async def team_of(self, model: str) -> str | None:
        """The model's team; None when the registry does not say."""
        now = self._clock()
        cached = self._known.get(model)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            team = (await self._registry.get_model(model)).team
        except PlatformError as exc:  # an unknown model, or a registry away: nobody's but the admins'
            log.info("model_team_unknown", model=model, error=repr(exc))
            known = cached[0] if cached is not None else None
            self._known[model] = (known, now + self._retry)
            return known
        self._known[model] = (team, now + self._ttl)
        return team

    async def readable(self, model: str, caller: Principal) -> tuple[bool, str | None]:
        """Whether ``caller`` may read ``model``'s status, and the model's team."""
        team = await self.team_of(model)
        return caller.admin or (team is not None and caller.may(Scope.READ, team)), team

    async def visible(self, entries: Iterable[Mapping[str, Any]], caller: Principal) -> list[dict[str, Any]]:
        """The status entries of the models ``caller`` may read, each naming its team."""
        shown = []
        for entry in entries:
            allowed, team = await self.readable(entry["model"], caller)
            if allowed:
                shown.append({**entry, "team": team})
        return shown
