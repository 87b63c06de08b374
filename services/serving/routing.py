"""Which version answers a request: rollout strategies driven by registry aliases and tags.

A model is served from its ``production`` alias. When it also has a ``candidate`` alias,
its rollout decides what the candidate gets:

- ``none``: nothing unless a request asks for it (``alias`` parameter or ``model_version``);
- ``canary``: a share of the traffic, chosen at random or, when the request carries a
  ``routing_key`` parameter, by a hash of it, so one key always lands on the same side;
- ``shadow``: a copy of every request, answered off the response path and only logged.

The rollout is read from tags, the candidate version's first, then the model's, then the
service's defaults, so a trainer can register a candidate "as shadow" and an operator can
set a model-wide policy. Tags: ``rollout`` (none|canary|shadow), ``canary_share`` (0..1),
``max_batch_rows`` and ``max_batch_wait_ms`` (batching for the model).
Rolling back is moving ``production`` back to an earlier version; serving keeps recent
versions in memory so that swap is immediate.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

SHADOW_ROUTE = "shadow"


class Rollout(StrEnum):
    NONE = "none"
    CANARY = "canary"
    SHADOW = "shadow"


@dataclass(frozen=True)
class ModelPolicy:
    """How one model is rolled out and batched; ``problems`` lists tags that were ignored."""

    rollout: Rollout = Rollout.NONE
    canary_share: float = 0.1
    max_batch_rows: int = 256
    max_batch_wait_ms: float = 2.0
    problems: tuple[str, ...] = ()


def read_policy(
    model_tags: Mapping[str, str], candidate_tags: Mapping[str, str], defaults: ModelPolicy
) -> ModelPolicy:
    """The policy from tags (the candidate's win over the model's) over ``defaults``.

    A tag with a bad value is ignored and reported in ``problems``, never fatal: a typo in
    a tag must not take a model out of service.
    """
    tags = {**model_tags, **candidate_tags}
    problems: list[str] = []

    def number(key: str, default: float, low: float, high: float) -> float:
        if key not in tags:
            return default
        try:
            value = float(tags[key])
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            problems.append(f"tag {key}={tags[key]!r} is not a number in [{low}, {high}]")
            return default
        return value

    rollout = defaults.rollout
    if "rollout" in tags:
        try:
            rollout = Rollout(tags["rollout"].strip().lower())
        except ValueError:
            problems.append(f"tag rollout={tags['rollout']!r} is not one of none, canary, shadow")
    return ModelPolicy(
        rollout=rollout,
        canary_share=number("canary_share", defaults.canary_share, 0.0, 1.0),
        max_batch_rows=int(number("max_batch_rows", defaults.max_batch_rows, 1, 100_000)),
        max_batch_wait_ms=number("max_batch_wait_ms", defaults.max_batch_wait_ms, 0.0, 1000.0),
        problems=tuple(problems),
    )


def canary_chosen(share: float, routing_key: str | None, rng: random.Random) -> bool:
    """Whether a request goes to the canary: sticky by ``routing_key`` when there is one."""
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    if routing_key is None:
        return rng.random() < share
    digest = hashlib.blake2b(routing_key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share
