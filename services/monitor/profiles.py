"""Versions' training references, read from the registry (adapter).

One call per version (``GetModelVersion``, read scope), with a short timeout. When the
registry cannot be asked, no call is made for ``retry_seconds``, for any version, so an
unreachable registry costs the detect stage one timeout per pause, not one per version.
"""

from __future__ import annotations

import math

from services.common.clients.registry import RegistryClient
from services.common.errors import NotFound, PlatformError
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import model_pb2
from services.monitor.reference import NONE, TRAINING, UNAVAILABLE, ReferenceLookup

log = get_logger(__name__)

MAX_SAMPLE = 4096
"""Reference values kept per feature at most, whatever the registry returns."""


def reference_from(profile: model_pb2.ReferenceProfile, at: float) -> ReferenceLookup:
    """The training reference in a version's profile (finite sample values only).

    >>> profile = model_pb2.ReferenceProfile(row_count=9)
    >>> _ = profile.features.add(name="f0", count=3, sample=[0.5, float("nan"), 1.5])
    >>> _ = profile.features.add(name="f1", count=0)
    >>> lookup = reference_from(profile, at=1.0)
    >>> lookup.status, dict(lookup.samples), lookup.rows
    ('training', {'f0': (0.5, 1.5)}, 9)
    >>> reference_from(model_pb2.ReferenceProfile(), at=1.0).status
    'none'
    """
    samples = {}
    for feature in profile.features:
        values = tuple(v for v in feature.sample[:MAX_SAMPLE] if math.isfinite(v))
        if values:
            samples[feature.name] = values
    if not samples:
        return ReferenceLookup(NONE, at, detail="the version was registered without a reference profile")
    return ReferenceLookup(TRAINING, at, samples=samples, rows=profile.row_count)


class ProfileSource:
    """Asks the registry for versions' reference profiles."""

    def __init__(self, registry: RegistryClient, retry_seconds: float):
        self._registry = registry
        self._retry_seconds = retry_seconds
        self._paused_until = 0.0
        self._why_paused = ""

    async def lookup(self, model: str, version: int, now: float) -> ReferenceLookup:
        if now < self._paused_until:
            return ReferenceLookup(UNAVAILABLE, now, detail=self._why_paused)
        try:
            found = await self._registry.get_version(model, version)
        except NotFound as exc:
            return ReferenceLookup(NONE, now, detail=f"the registry has no such version: {exc.message}")
        except PlatformError as exc:
            why = f"registry: {exc.kind.grpc_code}: {exc.message}"
            self._paused_until = now + self._retry_seconds
            self._why_paused = why
            log.warning("reference_unavailable", model=model, version=version, error=why)
            return ReferenceLookup(UNAVAILABLE, now, detail=why)
        return reference_from(found.reference_profile, now)

    async def close(self) -> None:
        await self._registry.close()
