"""Tokens: the registry is the platform's token issuer. It mints tokens (every one expires),
records them (never the token itself) so they can be listed, and revokes them; every
service reads the revocations (``ListRevokedTokens``) into its revocation list.

A token may name a team only for a subject that is a member of it with at least the
token's scopes (``mlops teams add-member``); the default team, which holds what existed
before teams, is open to every subject. ``admin`` tokens are the platform's and name no
team.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.common.auth import DEFAULT_TEAM, Revocation, Scope, parse_scopes
from services.common.auth.principal import SERVICE_SUBJECT_PREFIX
from services.common.proto.mlops.v1 import registry_pb2
from services.registry import access, validation
from services.registry.changes import Actor, Change, UseCases, resource
from services.registry.errors import FailedPrecondition, InvalidArgument, NotFound, PlatformError
from services.registry.store import Page
from services.registry.store.tokens import IssuedToken, RevokedToken, TokenRepository

TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _scopes(values: Sequence[str]) -> frozenset[Scope]:
    try:
        scopes = parse_scopes(values)
    except ValueError as exc:
        raise InvalidArgument(f"scopes: {exc}", field="scopes") from None
    if not scopes:
        raise InvalidArgument("scopes: give at least one scope", field="scopes")
    return scopes


class TokenUseCases(UseCases):
    def _ttl(self, ttl_seconds: int) -> int:
        if ttl_seconds < 0:
            raise InvalidArgument(
                "ttl_seconds: must be positive (0: the default lifetime)", field="ttl_seconds"
            )
        if ttl_seconds > self._settings.max_token_ttl_seconds:
            raise InvalidArgument(
                f"ttl_seconds: at most {self._settings.max_token_ttl_seconds} (the registry's maximum)",
                field="ttl_seconds",
            )
        return ttl_seconds or self._settings.token_ttl_seconds

    async def create_token(
        self,
        actor: Actor,
        subject: str,
        scopes: Sequence[str],
        teams: Sequence[str] = (),
        ttl_seconds: int = 0,
    ) -> registry_pb2.CreateTokenResponse:
        """Mint a token for ``subject`` with ``scopes`` in each of ``teams`` (empty: the default
        team), valid ``ttl_seconds`` (0: the default lifetime)."""
        target = resource("tokens", subject)
        try:
            held, ttl = self._token_request(subject, scopes, teams, ttl_seconds)
        except PlatformError as exc:
            await self._refused(actor, "CreateToken", target, exc)
            raise
        named = sorted(set(teams))

        async def work(change: Change) -> registry_pb2.CreateTokenResponse:
            assert self._issuer is not None
            change.team = named[0] if len(named) == 1 else ""
            if Scope.ADMIN not in held:
                for team in named or [DEFAULT_TEAM]:
                    await self._check_member(change, subject, team, held)
            minted = self._issuer.mint(subject, held, teams=named, ttl_seconds=ttl)
            issued = IssuedToken(
                id=minted.id,
                subject=subject,
                scopes=tuple(sorted(s.value for s in held)),
                teams=tuple(named),
                issued_at=datetime.fromtimestamp(minted.issued_at, UTC),
                expires_at=datetime.fromtimestamp(minted.expires_at, UTC),
                issued_by=actor.subject,
                key_id=self._issuer.key.kid,
            )
            await change.tx.tokens.record(issued)
            await change.audit(
                resource("tokens", minted.id),
                None,
                {
                    "subject": subject,
                    "scopes": list(issued.scopes),
                    "teams": named,
                    "expires_at": issued.expires_at.isoformat(),
                },
            )
            info = await change.tx.tokens.get(minted.id)
            assert info is not None
            return registry_pb2.CreateTokenResponse(token=minted.token, info=info)

        return await self._change(actor, "CreateToken", target, work)

    def _token_request(
        self, subject: str, scopes: Sequence[str], teams: Sequence[str], ttl_seconds: int
    ) -> tuple[frozenset[Scope], int]:
        """The scopes and lifetime of a token asked for, each input checked."""
        access.subject(subject)
        if subject.startswith(SERVICE_SUBJECT_PREFIX):
            raise InvalidArgument(
                "subject: service credentials are minted by the services themselves", field="subject"
            )
        held = _scopes(scopes)
        for i, team in enumerate(teams):
            access.team(team, f"teams[{i}]")
        if Scope.ADMIN in held and teams:
            raise InvalidArgument("teams: admin tokens act for every team; name none", field="teams")
        ttl = self._ttl(ttl_seconds)
        if self._issuer is None:
            raise FailedPrecondition("this registry issues no tokens: REGISTRY_SIGNING_KEY is not set")
        return held, ttl

    @staticmethod
    async def _check_member(change: Change, subject: str, team: str, scopes: frozenset[Scope]) -> None:
        if team == DEFAULT_TEAM:
            return
        found = await change.tx.teams.get(team)
        if found is None:
            raise NotFound(f"team {team!r} not found", field="teams")
        member = next((m for m in found.members if m.subject == subject), None)
        if member is None:
            raise FailedPrecondition(
                f"{subject!r} is not a member of team {team!r}: add it first (mlops teams add-member)"
            )
        missing = sorted(s.value for s in scopes - parse_scopes(member.scopes))
        if missing:
            raise FailedPrecondition(
                f"{subject!r} may be given {', '.join(sorted(member.scopes))} in team {team!r}, "
                f"not {', '.join(missing)}"
            )

    async def list_tokens(
        self, *, subject: str = "", include_revoked: bool = False, page_size: int = 0, page_token: str = ""
    ) -> Page[registry_pb2.TokenInfo]:
        """Tokens issued and not expired yet, newest first."""
        if subject:
            access.subject(subject)
        request = self._page(TokenRepository.NEWEST_FIRST, page_size, page_token)
        return await self._store.tokens.page(subject, include_revoked, request)

    async def revoke_token(self, actor: Actor, token_id: str, reason: str = "") -> registry_pb2.TokenInfo:
        """Revoke the token: every service refuses it within its revocation poll."""
        target = resource("tokens", token_id)

        def check() -> None:
            if not TOKEN_ID.fullmatch(token_id):
                raise InvalidArgument("id: a token id (its jti)", field="id")
            validation.text(reason, "reason", validation.MAX_SHORT_TEXT)

        await self._validated(actor, "RevokeToken", target, check)

        async def work(change: Change) -> registry_pb2.TokenInfo:
            info = await change.tx.tokens.revoke(
                token_id,
                now=change.now,
                by=actor.subject,
                reason=reason,
                unknown_expires_at=change.now + timedelta(seconds=self._settings.max_token_ttl_seconds),
            )
            change.team = info.teams[0] if len(info.teams) == 1 else ""
            await change.audit(target, None, {"revoked_at": change.now.isoformat(), "reason": reason})
            return info

        info = await self._change(actor, "RevokeToken", target, work)
        self._on_revoke(
            Revocation(
                info.id,
                info.revoked_at.ToDatetime(UTC).timestamp(),
                info.expires_at.ToDatetime(UTC).timestamp(),
            )
        )
        return info

    async def revoked_tokens(
        self, since: datetime | None, *, page_size: int = 0, page_token: str = ""
    ) -> Page[RevokedToken]:
        """Revocations made at or after ``since`` (None: all), oldest first."""
        request = self._page(TokenRepository.OLDEST_REVOCATION_FIRST, page_size, page_token)
        return await self._store.tokens.revoked_since(since, request)

    async def revocations(self, since: float) -> list[Revocation]:
        """Every revocation made at or after ``since`` (epoch seconds; 0: all): the registry's
        own revocation list reads them from its database."""
        found: list[Revocation] = []
        token = ""
        moment = datetime.fromtimestamp(since, UTC) if since else None
        while True:
            page = await self.revoked_tokens(moment, page_size=self._settings.max_page_size, page_token=token)
            found += [
                Revocation(r.id, r.revoked_at.timestamp(), r.expires_at.timestamp()) for r in page.items
            ]
            token = page.next_page_token
            if not token:
                return found
