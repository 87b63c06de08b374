"""Rollout policies from tags, and the canary choice."""

from __future__ import annotations

import random

from services.serving.routing import ModelPolicy, Rollout, canary_chosen, read_policy

DEFAULTS = ModelPolicy(rollout=Rollout.NONE, canary_share=0.1, max_batch_rows=64, max_batch_wait_ms=0.0)


def test_candidate_tags_override_model_tags_which_override_defaults() -> None:
    policy = read_policy({"rollout": "canary", "canary_share": "0.3"}, {"rollout": "shadow"}, DEFAULTS)
    assert policy.rollout is Rollout.SHADOW
    assert policy.canary_share == 0.3
    assert read_policy({}, {}, DEFAULTS) == DEFAULTS


def test_bad_tags_are_ignored_and_reported_never_fatal() -> None:
    policy = read_policy(
        {"rollout": "blue-green", "canary_share": "lots", "max_batch_rows": "0"}, {}, DEFAULTS
    )
    assert policy.rollout is Rollout.NONE
    assert policy.canary_share == 0.1
    assert policy.max_batch_rows == 64
    assert len(policy.problems) == 3
    assert any("rollout='blue-green'" in p for p in policy.problems)


def test_canary_share_is_honoured_at_random() -> None:
    rng = random.Random(7)
    chosen = sum(canary_chosen(0.2, None, rng) for _ in range(10_000))
    assert 1_800 < chosen < 2_200
    assert not any(canary_chosen(0.0, None, rng) for _ in range(100))
    assert all(canary_chosen(1.0, None, rng) for _ in range(100))


def test_a_routing_key_always_lands_on_the_same_side_and_keys_split_by_share() -> None:
    rng = random.Random(0)
    keys = [f"user-{i}" for i in range(5_000)]
    first = [canary_chosen(0.25, key, rng) for key in keys]
    assert first == [canary_chosen(0.25, key, rng) for key in keys]
    assert 1_100 < sum(first) < 1_400
    # Growing the share only moves keys onto the canary, never off it.
    wider = [canary_chosen(0.5, key, rng) for key in keys]
    assert all(w for f, w in zip(first, wider, strict=True) if f)
