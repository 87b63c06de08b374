"""Lifecycle rules: what a new version becomes, when an alias may move, where rollback goes."""

from __future__ import annotations

import pytest

from services.registry import lifecycle
from services.registry.errors import Conflict, FailedPrecondition
from services.registry.lifecycle import (
    APPROVED,
    ARCHIVED,
    AUTO,
    GATES_FAILED,
    MANUAL,
    PENDING,
    READY,
    REJECTED,
    AliasMove,
    Candidate,
    Status,
)

UNSPECIFIED = 0


@pytest.mark.parametrize(
    ("policy", "has_gates", "passed", "status", "moves"),
    [
        (AUTO, True, True, READY, [AliasMove("production", 7, "auto_promote")]),
        (UNSPECIFIED, True, True, READY, [AliasMove("production", 7, "auto_promote")]),
        (AUTO, True, False, GATES_FAILED, []),
        (AUTO, False, False, READY, []),
        (MANUAL, True, True, PENDING, [AliasMove("candidate", 7, "candidate")]),
        (MANUAL, False, False, PENDING, [AliasMove("candidate", 7, "candidate")]),
        (MANUAL, True, False, GATES_FAILED, []),
    ],
)
def test_a_new_version_gets_its_status_and_aliases_from_the_policy(
    policy: int, has_gates: bool, passed: bool, status: int, moves: list[AliasMove]
) -> None:
    decision = lifecycle.on_version_created(policy, 7, has_gates, passed)  # type: ignore[arg-type]
    assert decision.status == status
    assert list(decision.moves) == moves


def test_compare_and_set() -> None:
    lifecycle.check_expected("production", 3, 0)
    lifecycle.check_expected("production", 3, 3)
    lifecycle.check_expected("production", 0, -1)
    with pytest.raises(Conflict, match="points at version 3, not at version 2"):
        lifecycle.check_expected("production", 3, 2)
    with pytest.raises(Conflict, match="expected it unset"):
        lifecycle.check_expected("production", 3, -1)
    with pytest.raises(Conflict, match="points at nothing"):
        lifecycle.check_expected("production", 0, 4)


@pytest.mark.parametrize("status", [REJECTED, ARCHIVED])
def test_rejected_and_archived_versions_take_no_alias(status: int) -> None:
    with pytest.raises(FailedPrecondition):
        lifecycle.check_alias_target("staging", 1, status, AUTO)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [GATES_FAILED, PENDING])
def test_production_needs_a_version_fit_for_it(status: int) -> None:
    lifecycle.check_alias_target("staging", 1, status, AUTO)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match="cannot be production"):
        lifecycle.check_alias_target("production", 1, status, AUTO)  # type: ignore[arg-type]


def test_manual_models_reach_production_only_through_approval() -> None:
    lifecycle.check_alias_target("production", 1, READY, AUTO)
    lifecycle.check_alias_target("production", 1, APPROVED, MANUAL)
    with pytest.raises(FailedPrecondition, match="needs approval"):
        lifecycle.check_alias_target("production", 1, READY, MANUAL)


def test_review_moves_candidate_and_production() -> None:
    aliases = {"candidate": 4, "production": 2}
    assert lifecycle.on_review(PENDING, 4, True, aliases) == [
        AliasMove("candidate", 0, "approve"),
        AliasMove("production", 4, "approve"),
    ]
    assert lifecycle.on_review(PENDING, 4, False, aliases) == [AliasMove("candidate", 0, "reject")]
    # The candidate alias moved on to a newer version: leave it there.
    assert lifecycle.on_review(PENDING, 3, False, aliases) == []
    with pytest.raises(FailedPrecondition, match="not PENDING_APPROVAL"):
        lifecycle.on_review(APPROVED, 4, True, aliases)


def test_archive_only_unaliased_versions_once() -> None:
    lifecycle.check_archivable(READY, 1, [])
    with pytest.raises(FailedPrecondition, match="production, staging"):
        lifecycle.check_archivable(READY, 1, ["staging", "production"])
    with pytest.raises(FailedPrecondition, match="already archived"):
        lifecycle.check_archivable(ARCHIVED, 1, [])


def candidates(*items: tuple[int, Status.ValueType, bool]) -> dict[int, Candidate]:
    return {v: Candidate(v, s, r) for v, s, r in items}


def test_rollback_returns_to_the_previous_fit_version() -> None:
    known = candidates((1, READY, False), (2, READY, False), (3, READY, False))
    assert lifecycle.rollback_target("production", 3, [3, 2, 1], known) == 2


def test_repeated_rollbacks_walk_back_instead_of_bouncing() -> None:
    # History after rolling back from 3 to 2: 2 (rollback), 3, 2, 1.
    known = candidates((1, READY, False), (2, READY, False), (3, READY, True))
    assert lifecycle.rollback_target("production", 2, [2, 3, 2, 1], known) == 1


def test_rollback_skips_versions_no_longer_fit() -> None:
    known = candidates((1, READY, False), (2, ARCHIVED, False), (3, READY, False), (4, GATES_FAILED, False))
    assert lifecycle.rollback_target("production", 3, [3, 4, 2, 1], known) == 1
    assert lifecycle.rollback_target("staging", 3, [3, 4, 2, 1], known) == 4


def test_rollback_without_history_or_alias_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="not set"):
        lifecycle.rollback_target("production", 0, [], {})
    with pytest.raises(FailedPrecondition, match="no earlier version"):
        lifecycle.rollback_target("production", 1, [1], candidates((1, READY, False)))
