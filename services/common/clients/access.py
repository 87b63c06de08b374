"""Async client of the registry's access API: teams, tokens and the revocation list.

Usage::

    async with AccessClient("127.0.0.1:50051", credentials) as access:
        minted = await access.create_token("app:checkout", ["predict"], teams=["alpha"])
        await access.revoke_token(minted.info.id, reason="leaked")

Every service's revocation list reads :meth:`AccessClient.revocations` (see
:class:`~services.common.auth.RevocationPoller`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.auth import Revocation
from services.common.clients.base import GrpcClient
from services.common.proto.mlops.v1 import registry_pb2, registry_pb2_grpc
from services.common.tls import ClientTls

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class AccessClient(GrpcClient):
    """Typed calls to the team and token methods of ``mlops.v1.RegistryService``."""

    def __init__(
        self, address: str, token: Callable[[], str], *, timeout: float = 10.0, tls: ClientTls | None = None
    ):
        super().__init__(address, token, max_message_bytes=MAX_MESSAGE_BYTES, tls=tls)
        self._registry = self._stub(registry_pb2_grpc.RegistryServiceStub)
        self._timeout = timeout

    # ------------------------------------------------------------------- teams

    async def create_team(self, name: str, description: str = "") -> registry_pb2.Team:
        return await self._registry.CreateTeam(
            registry_pb2.CreateTeamRequest(name=name, description=description),
            metadata=self._metadata(),
            timeout=self._timeout,
        )

    async def get_team(self, name: str) -> registry_pb2.Team:
        return await self._registry.GetTeam(
            registry_pb2.GetTeamRequest(name=name), metadata=self._metadata(), timeout=self._timeout
        )

    async def list_teams(self) -> list[registry_pb2.Team]:
        """The caller's teams (every team for an admin), all pages."""
        teams: list[registry_pb2.Team] = []
        token = ""
        while True:
            response = await self._registry.ListTeams(
                registry_pb2.ListTeamsRequest(page_token=token),
                metadata=self._metadata(),
                timeout=self._timeout,
            )
            teams += response.teams
            token = response.next_page_token
            if not token:
                return teams

    async def add_member(self, team: str, subject: str, scopes: Sequence[str]) -> registry_pb2.Team:
        return await self._registry.AddTeamMember(
            registry_pb2.TeamMemberRequest(team=team, subject=subject, scopes=list(scopes)),
            metadata=self._metadata(),
            timeout=self._timeout,
        )

    async def remove_member(self, team: str, subject: str) -> registry_pb2.Team:
        return await self._registry.RemoveTeamMember(
            registry_pb2.TeamMemberRequest(team=team, subject=subject),
            metadata=self._metadata(),
            timeout=self._timeout,
        )

    # ------------------------------------------------------------------ tokens

    async def create_token(
        self, subject: str, scopes: Sequence[str], *, teams: Sequence[str] = (), ttl_seconds: int = 0
    ) -> registry_pb2.CreateTokenResponse:
        """A new token (``response.token``, shown once) and its record (``response.info``)."""
        return await self._registry.CreateToken(
            registry_pb2.CreateTokenRequest(
                subject=subject, scopes=list(scopes), teams=list(teams), ttl_seconds=ttl_seconds
            ),
            metadata=self._metadata(),
            timeout=self._timeout,
        )

    async def list_tokens(
        self, subject: str = "", *, include_revoked: bool = False
    ) -> list[registry_pb2.TokenInfo]:
        """Tokens issued and not expired yet, newest first (all pages)."""
        tokens: list[registry_pb2.TokenInfo] = []
        page = ""
        while True:
            response = await self._registry.ListTokens(
                registry_pb2.ListTokensRequest(
                    subject=subject, include_revoked=include_revoked, page_token=page
                ),
                metadata=self._metadata(),
                timeout=self._timeout,
            )
            tokens += response.tokens
            page = response.next_page_token
            if not page:
                return tokens

    async def revoke_token(self, token_id: str, reason: str = "") -> registry_pb2.TokenInfo:
        return await self._registry.RevokeToken(
            registry_pb2.RevokeTokenRequest(id=token_id, reason=reason),
            metadata=self._metadata(),
            timeout=self._timeout,
        )

    async def revocations(self, since: float) -> list[Revocation]:
        """Revocations made at or after ``since`` (epoch seconds; 0: every one not expired)."""
        request = registry_pb2.ListRevokedTokensRequest()
        if since:
            stamp = Timestamp()
            stamp.FromDatetime(datetime.fromtimestamp(since, UTC))
            request.since.CopyFrom(stamp)
        found: list[Revocation] = []
        while True:
            response = await self._registry.ListRevokedTokens(
                request, metadata=self._metadata(), timeout=self._timeout
            )
            found += [
                Revocation(
                    r.id, r.revoked_at.ToDatetime(UTC).timestamp(), r.expires_at.ToDatetime(UTC).timestamp()
                )
                for r in response.tokens
            ]
            if not response.next_page_token:
                return found
            request.page_token = response.next_page_token
