"""Teams: creating them, their members (and the scopes each may be given in the team's
tokens), and finding them. Administrators change teams; a member reads its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import access, validation
from services.registry.changes import Actor, Change, UseCases, resource
from services.registry.errors import NotFound
from services.registry.store import Page
from services.registry.store.teams import Member, TeamRepository

Team = registry_pb2.Team


def _members(team: Team) -> dict[str, Member]:
    return {
        m.subject: Member(m.subject, tuple(m.scopes), m.added_at.ToDatetime(UTC), m.added_by)
        for m in team.members
    }


class TeamUseCases(UseCases):
    async def create_team(self, actor: Actor, name: str, description: str = "") -> Team:
        target = resource("teams", name)

        def check() -> None:
            access.team(name, "name")
            validation.text(description, "description")

        await self._validated(actor, "CreateTeam", target, check)

        async def work(change: Change) -> Team:
            change.team = name
            team = await change.tx.teams.create(
                name, description=description, created_by=actor.subject, now=change.now
            )
            await change.audit(target, None, {"description": description})
            return team

        return await self._change(actor, "CreateTeam", target, work)

    async def get_team(self, actor: Actor, name: str) -> Team:
        access.team(name, "name")
        team = await self._store.teams.get(name) if actor.principal.acts_for(name) else None
        if team is None:
            raise NotFound(f"team {name!r} not found")
        return team

    async def list_teams(self, actor: Actor, *, page_size: int = 0, page_token: str = "") -> Page[Team]:
        """The caller's teams (every team for an admin)."""
        request = self._page(TeamRepository.BY_NAME, page_size, page_token)
        return await self._store.teams.page(actor.visible_teams(), request)

    async def set_member(self, actor: Actor, team: str, subject: str, scopes: Sequence[str]) -> Team:
        """Add ``subject`` to ``team`` with ``scopes``, or change its scopes there."""
        target = resource("teams", team, "members", subject)
        granted: list[str] = []

        def check() -> None:
            access.team(team)
            access.subject(subject)
            granted.extend(sorted(s.value for s in access.team_scopes(scopes)))

        await self._validated(actor, "AddTeamMember", target, check)

        async def work(change: Change) -> Team:
            members = _members(await self._team(change, team))
            before = members.get(subject)
            members[subject] = Member(
                subject,
                tuple(granted),
                before.added_at if before else change.now,
                before.added_by if before else actor.subject,
            )
            await change.tx.teams.replace_members(team, list(members.values()))
            await change.audit(
                target, {"scopes": list(before.scopes)} if before else None, {"scopes": granted}
            )
            return await self._team(change, team)

        return await self._change(actor, "AddTeamMember", target, work)

    async def remove_member(self, actor: Actor, team: str, subject: str) -> Team:
        """Take ``subject`` out of ``team``: tokens minted for it later cannot name the team
        (revoke the ones it holds to cut it off now)."""
        target = resource("teams", team, "members", subject)

        def check() -> None:
            access.team(team)
            access.subject(subject)

        await self._validated(actor, "RemoveTeamMember", target, check)

        async def work(change: Change) -> Team:
            members = _members(await self._team(change, team))
            removed = members.pop(subject, None)
            if removed is None:
                raise NotFound(f"{subject!r} is not a member of team {team!r}")
            await change.tx.teams.replace_members(team, list(members.values()))
            await change.audit(target, {"scopes": list(removed.scopes)}, None)
            return await self._team(change, team)

        return await self._change(actor, "RemoveTeamMember", target, work)

    @staticmethod
    async def _team(change: Change, name: str) -> Team:
        change.team = name
        team = await change.tx.teams.get(name)
        if team is None:
            raise NotFound(f"team {name!r} not found")
        return team
