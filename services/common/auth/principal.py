"""Who is calling and what they may do: scopes, teams, and the principal a token stands for.

A principal holds *grants*: for each team it may act for, the scopes it has there.
``admin`` is the platform administrator's scope: every scope, in every team. A grant
for :data:`ALL_TEAMS` applies in every team (service credentials carry one).

>>> alice = Principal.of("alice", [Scope.READ, Scope.WRITE], teams=["alpha"])
>>> alice.may(Scope.WRITE, "alpha"), alice.may(Scope.WRITE, "beta"), alice.allows(Scope.WRITE)
(True, False, True)
>>> sorted(alice.visible_teams())
['alpha']
>>> root = Principal.of("root", [Scope.ADMIN])
>>> root.may(Scope.APPROVE, "beta"), root.visible_teams() is None
(True, True)
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_TEAM = "default"
"""The team of everything made before teams existed, and of tokens that name no team."""
ALL_TEAMS = "*"
"""A grant in every team (service credentials)."""
TEAM_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
"""What a team may be called (``TEAM_NAME.fullmatch(name)``): lower case, so names do not
differ only by case."""
SERVICE_SUBJECT_PREFIX = "service:"
"""Subjects of service credentials; no other issuer may use them."""


class Scope(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    PROMOTE = "promote"
    APPROVE = "approve"
    ADMIN = "admin"
    PREDICT = "predict"
    INGEST = "ingest"


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes from names; an unknown name is an error, never silently dropped."""
    scopes = set()
    for value in values:
        try:
            scopes.add(Scope(value.strip().lower()))
        except ValueError:
            raise ValueError(f"unknown scope {value!r}; known: {', '.join(s.value for s in Scope)}") from None
    return frozenset(scopes)


def check_team_name(name: str, *, wildcard: bool = False) -> str:
    """``name`` if it is a team's name (or :data:`ALL_TEAMS` when ``wildcard``), else ValueError."""
    if wildcard and name == ALL_TEAMS:
        return name
    if not TEAM_NAME.fullmatch(name):
        raise ValueError(f"team {name[:80]!r} is not a team name (lower-case letters, digits, . _ -)")
    return name


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do in which team."""

    subject: str
    grants: Mapping[str, frozenset[Scope]]
    """Team -> the scopes held there (:data:`ALL_TEAMS`: in every team)."""
    token_id: str = ""
    expires_at: float | None = None
    issuer: str = ""
    scopes: frozenset[Scope] = field(init=False)
    """Every scope held in some team: what a method's scope check admits before the use
    case checks the team of the resource."""

    def __post_init__(self) -> None:
        held: set[Scope] = set()
        for scopes in self.grants.values():
            held |= scopes
        object.__setattr__(self, "scopes", frozenset(held))

    @classmethod
    def of(
        cls,
        subject: str,
        scopes: Iterable[Scope],
        teams: Iterable[str] = (DEFAULT_TEAM,),
        **kwargs: object,
    ) -> Principal:
        """The same ``scopes`` in each of ``teams`` (as platform tokens carry them)."""
        held = frozenset(scopes)
        return cls(subject, dict.fromkeys(teams, held), **kwargs)  # type: ignore[arg-type]

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def teams(self) -> frozenset[str]:
        return frozenset(self.grants)

    def allows(self, scope: Scope) -> bool:
        """Whether the principal holds ``scope`` in some team."""
        return self.admin or scope in self.scopes

    def acts_for(self, team: str) -> bool:
        """Whether the principal may see ``team``'s resources at all."""
        return self.admin or team in self.grants or ALL_TEAMS in self.grants

    def may(self, scope: Scope, team: str) -> bool:
        """Whether the principal holds ``scope`` in ``team``."""
        if self.admin:
            return True
        return scope in self.grants.get(team, frozenset()) or scope in self.grants.get(ALL_TEAMS, frozenset())

    def home_team(self) -> str:
        """The team a new resource goes to when the caller names none: its only team, else
        the default team."""
        teams = [t for t in self.grants if t != ALL_TEAMS]
        return teams[0] if len(teams) == 1 and not self.admin else DEFAULT_TEAM

    def visible_teams(self) -> frozenset[str] | None:
        """The teams whose resources a list may show; None for every team."""
        if self.admin or ALL_TEAMS in self.grants:
            return None
        return self.teams
