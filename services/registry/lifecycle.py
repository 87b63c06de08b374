"""The lifecycle rules of versions and aliases, without any I/O.

Given a model's promotion policy and a version's state, these functions decide what a
change does (which status a new version gets, which aliases move) or refuse it. The
registry applies their decisions inside one database transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from services.common.aliases import CANDIDATE, PRODUCTION
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.errors import Conflict, FailedPrecondition

Status = registry_pb2.VersionStatus
AUTO = registry_pb2.PROMOTION_POLICY_AUTO
MANUAL = registry_pb2.PROMOTION_POLICY_MANUAL
READY = registry_pb2.VERSION_STATUS_READY
PENDING = registry_pb2.VERSION_STATUS_PENDING_APPROVAL
APPROVED = registry_pb2.VERSION_STATUS_APPROVED
REJECTED = registry_pb2.VERSION_STATUS_REJECTED
ARCHIVED = registry_pb2.VERSION_STATUS_ARCHIVED
GATES_FAILED = registry_pb2.VERSION_STATUS_GATES_FAILED

# Versions in these states can take no alias at all.
UNALIASABLE = frozenset({REJECTED, ARCHIVED})
# Versions in these states may not serve production traffic.
NOT_FOR_PRODUCTION = frozenset({REJECTED, ARCHIVED, GATES_FAILED, PENDING})

# SetAlias/DeleteAlias expected_version: 0 means unconditional, -1 means "unset".
EXPECT_ANY = 0
EXPECT_UNSET = -1


@dataclass(frozen=True)
class AliasMove:
    """Point ``alias`` at ``version`` (0 removes it)."""

    alias: str
    version: int
    action: str


@dataclass(frozen=True)
class NewVersionDecision:
    status: Status.ValueType
    moves: tuple[AliasMove, ...]


def effective_policy(
    policy: registry_pb2.PromotionPolicy.ValueType,
) -> registry_pb2.PromotionPolicy.ValueType:
    """Unspecified means automatic: a model nobody configured promotes when its gates pass."""
    return MANUAL if policy == MANUAL else AUTO


def on_version_created(
    policy: registry_pb2.PromotionPolicy.ValueType, version: int, has_gates: bool, gates_passed: bool
) -> NewVersionDecision:
    """The status of a new version and the aliases that move to it.

    A version whose gates were evaluated and failed is kept (for lineage and audit) but
    never promoted. Under AUTO, passed gates move ``production`` at once; under MANUAL,
    the version waits for a person with the candidate alias. A version registered
    without any gate evaluation (by hand) is READY and moves nothing.
    """
    if has_gates and not gates_passed:
        return NewVersionDecision(GATES_FAILED, ())
    if effective_policy(policy) == MANUAL:
        return NewVersionDecision(PENDING, (AliasMove(CANDIDATE, version, "candidate"),))
    if gates_passed:
        return NewVersionDecision(READY, (AliasMove(PRODUCTION, version, "auto_promote"),))
    return NewVersionDecision(READY, ())


def check_expected(alias: str, current: int, expected: int) -> None:
    """Compare-and-set: refuse with :class:`Conflict` when ``alias`` is not where the caller
    believes (``current`` is 0 when the alias is unset)."""
    if expected == EXPECT_ANY:
        return
    if expected == EXPECT_UNSET:
        if current:
            raise Conflict(f"alias {alias!r} is set (to version {current}); expected it unset")
        return
    if current != expected:
        where = f"version {current}" if current else "nothing"
        raise Conflict(f"alias {alias!r} points at {where}, not at version {expected}")


def check_alias_target(
    alias: str, version: int, status: Status.ValueType, policy: registry_pb2.PromotionPolicy.ValueType
) -> None:
    """Whether ``alias`` may point at a version in ``status``."""
    name = registry_pb2.VersionStatus.Name(status)
    if status in UNALIASABLE:
        raise FailedPrecondition(f"version {version} is {name} and can take no alias")
    if alias != PRODUCTION:
        return
    if status in NOT_FOR_PRODUCTION:
        raise FailedPrecondition(f"version {version} is {name} and cannot be production")
    if effective_policy(policy) == MANUAL and status != APPROVED:
        raise FailedPrecondition(
            f"the model needs approval: version {version} is {name}, approve it to make it production"
        )


def on_review(
    status: Status.ValueType, version: int, approve: bool, aliases: Mapping[str, int]
) -> list[AliasMove]:
    """Aliases that move when a pending version is approved or rejected."""
    if status != PENDING:
        raise FailedPrecondition(
            f"version {version} is {registry_pb2.VersionStatus.Name(status)}, not PENDING_APPROVAL"
        )
    moves = []
    if aliases.get(CANDIDATE) == version:
        moves.append(AliasMove(CANDIDATE, 0, "approve" if approve else "reject"))
    if approve:
        moves.append(AliasMove(PRODUCTION, version, "approve"))
    return moves


def check_archivable(status: Status.ValueType, version: int, aliases: Iterable[str]) -> None:
    held = sorted(aliases)
    if held:
        raise FailedPrecondition(
            f"version {version} is still the target of alias(es) {', '.join(held)}: move them first"
        )
    if status == ARCHIVED:
        raise FailedPrecondition(f"version {version} is already archived")


@dataclass(frozen=True)
class Candidate:
    """A version an alias pointed at before, as rollback sees it."""

    version: int
    status: Status.ValueType
    rolled_back: bool


def rollback_target(
    alias: str, current: int, history: Sequence[int], candidates: Mapping[int, Candidate]
) -> int:
    """The version ``alias`` goes back to: the most recent earlier target that is still
    fit for it and was not itself rolled back from.

    ``history`` holds the versions the alias was set to, newest first. Skipping versions
    already rolled back from makes repeated rollbacks walk further back instead of
    bouncing between the last two versions.
    """
    if not current:
        raise FailedPrecondition(f"alias {alias!r} is not set: nothing to roll back")
    for version in history:
        if not version or version == current:
            continue
        candidate = candidates.get(version)
        if candidate is None or candidate.rolled_back or candidate.status in UNALIASABLE:
            continue
        if alias == PRODUCTION and candidate.status in NOT_FOR_PRODUCTION:
            continue
        return version
    raise FailedPrecondition(f"alias {alias!r} has no earlier version to roll back to")
