"""Who may do what in the registry: the scope each operation needs, and the checks on the
names of teams, subjects and scopes callers send.

A caller's token holds scopes in teams (:class:`~services.common.auth.Principal`). The
gRPC interceptor and the REST dependencies admit a call when the token holds the
operation's scope in *some* team; the use case then checks the team of the resource it
touches. A resource of a team the caller does not act for is NOT_FOUND, exactly like a
resource that does not exist, so names of other teams' models do not leak (GitHub answers
private repositories the same way). One the caller sees but lacks the scope for in its
team is PERMISSION_DENIED.

>>> ACTION_SCOPES["SetAlias"].value, ACTION_SCOPES["ListRevokedTokens"].value
('promote', 'read')
>>> team("Alpha")
Traceback (most recent call last):
...
services.common.errors.InvalidArgument: team: team 'Alpha' is not a team name (lower-case letters, digits, . _ -)
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.auth import Scope, check_team_name, parse_scopes
from services.common.auth.tokens import check_subject
from services.registry.errors import InvalidArgument

ACTION_SCOPES: dict[str, Scope] = {
    "CreateModel": Scope.WRITE,
    "UpdateModel": Scope.WRITE,
    "GetModel": Scope.READ,
    "ListModels": Scope.READ,
    "CreateModelVersion": Scope.WRITE,
    "GetModelVersion": Scope.READ,
    "ListModelVersions": Scope.READ,
    "SearchModelVersions": Scope.READ,
    "DownloadArtifact": Scope.READ,
    "GetLineage": Scope.READ,
    "ListAliasHistory": Scope.READ,
    "SetAlias": Scope.PROMOTE,
    "DeleteAlias": Scope.PROMOTE,
    "Rollback": Scope.PROMOTE,
    "ApproveVersion": Scope.APPROVE,
    "RejectVersion": Scope.APPROVE,
    "ArchiveVersion": Scope.WRITE,
    "PutModelSpec": Scope.WRITE,
    "GetModelSpec": Scope.READ,
    "ListModelSpecs": Scope.READ,
    "ListAuditRecords": Scope.ADMIN,
    # mlops.v1.RunService (run_api.py), served beside this one.
    "GetRun": Scope.READ,
    "ListRuns": Scope.READ,
    "CreateTeam": Scope.ADMIN,
    "GetTeam": Scope.READ,
    "ListTeams": Scope.READ,
    "AddTeamMember": Scope.ADMIN,
    "RemoveTeamMember": Scope.ADMIN,
    "CreateToken": Scope.ADMIN,
    "ListTokens": Scope.ADMIN,
    "RevokeToken": Scope.ADMIN,
    "ListRevokedTokens": Scope.READ,
}
"""The scope each registry operation needs (in the resource's team, for team resources)."""


def team(value: str, field: str = "team") -> str:
    """A team's name, InvalidArgument naming ``field`` otherwise."""
    try:
        return check_team_name(value)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {exc}", field=field) from None


def subject(value: str, field: str = "subject") -> str:
    try:
        return check_subject(value)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {exc}", field=field) from None


def team_scopes(values: Iterable[str], field: str = "scopes") -> frozenset[Scope]:
    """At least one scope, none of them ``admin`` (the platform's, not a team's)."""
    try:
        scopes = parse_scopes(values)
    except ValueError as exc:
        raise InvalidArgument(f"{field}: {exc}", field=field) from None
    if not scopes:
        raise InvalidArgument(f"{field}: give at least one scope", field=field)
    if Scope.ADMIN in scopes:
        raise InvalidArgument(f"{field}: admin is the platform's scope, not a team's", field=field)
    return scopes
