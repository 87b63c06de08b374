"""Single sign-on: tokens of an organisation's OpenID Connect provider, admitted with teams
and scopes mapped from their claims by configuration.

The provider's keys come from its JWKS address and are cached (``PyJWKClient``, refreshed
after ``cache_seconds``, and when a token names a key id not seen yet, at most once every
30 seconds so tokens with made-up key ids cannot make the platform hammer the provider).
A token must come from the configured issuer, be meant for the configured audience, be
signed with RS256, PS256, ES256 or EdDSA and carry ``exp``. Its groups (a list, or a
space-separated string, at a claim path such as ``groups`` or ``realm_access.roles``)
are mapped to grants: each group the mapping names adds its scopes in its team. A group
mapped without a team must grant ``admin`` (platform administrators). Groups the mapping
does not name grant nothing, and a token none of whose groups are mapped is refused.

>>> grants = {"ml-alpha": GroupGrant(team="alpha", scopes=["read", "write"]),
...           "ml-admins": GroupGrant(scopes=["admin"])}
>>> mapped = grants_of(["ml-alpha", "sales"], grants)
>>> {team: sorted(s.value for s in scopes) for team, scopes in mapped.items()}
{'alpha': ['read', 'write']}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.common.auth.principal import (
    DEFAULT_TEAM,
    SERVICE_SUBJECT_PREFIX,
    Principal,
    Scope,
    check_team_name,
    parse_scopes,
)
from services.common.auth.tokens import LEEWAY_SECONDS, AuthError, check_subject, verified_claims

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")


class GroupGrant(BaseModel):
    """What membership of one provider group grants: ``scopes`` in ``team``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str = ""
    """Empty only for a group that grants ``admin``."""
    scopes: list[str] = Field(min_length=1)

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: list[str]) -> list[str]:
        parse_scopes(scopes)
        return scopes

    @field_validator("team")
    @classmethod
    def _team(cls, team: str) -> str:
        return check_team_name(team, wildcard=True) if team else team

    @model_validator(mode="after")
    def _admin_without_team(self) -> GroupGrant:
        if not self.team and parse_scopes(self.scopes) != {Scope.ADMIN}:
            raise ValueError("a group mapped without a team must grant exactly ['admin']")
        return self


def grants_of(groups: Iterable[str], mapping: Mapping[str, GroupGrant]) -> dict[str, frozenset[Scope]]:
    """Team -> scopes from the groups ``mapping`` names (admin groups under the default team)."""
    grants: dict[str, set[Scope]] = {}
    for group in groups:
        grant = mapping.get(group)
        if grant is not None:
            grants.setdefault(grant.team or DEFAULT_TEAM, set()).update(parse_scopes(grant.scopes))
    return {team: frozenset(scopes) for team, scopes in grants.items()}


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path (``realm_access.roles``), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class OidcProvider:
    """One trusted OpenID Connect issuer."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        group_grants: Mapping[str, GroupGrant],
        *,
        subject_claim: str = "sub",
        groups_claim: str = "groups",
        cache_seconds: float = 300.0,
        timeout: float = 5.0,
        leeway: float = LEEWAY_SECONDS,
    ):
        self.issuer = issuer
        self._audience = audience
        self._grants = dict(group_grants)
        self._subject_claim = subject_claim
        self._groups_claim = groups_claim
        self._leeway = leeway
        self._keys = jwt.PyJWKClient(
            jwks_url, cache_keys=True, lifespan=int(cache_seconds), timeout=int(timeout)
        )

    def principal(self, token: str) -> Principal:
        """The principal of a token from this issuer (blocks while the key set is fetched)."""
        try:
            key = self._keys.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthError(f"invalid token: the identity provider's keys cannot be read ({exc})") from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise AuthError(f"invalid token: {exc}") from None
        if key.algorithm_name not in ALGORITHMS:
            raise AuthError(f"invalid token: algorithm {key.algorithm_name} is not accepted")
        claims = verified_claims(
            token,
            key,
            require=["iss", "aud", "exp", "iat"],
            issuer=self.issuer,
            audience=self._audience,
            leeway=self._leeway,
        )
        subject = claim_at(claims, self._subject_claim)
        if not isinstance(subject, str):
            raise AuthError(f"invalid token: no {self._subject_claim!r} claim naming the subject")
        try:
            check_subject(subject)
        except ValueError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        if subject.startswith(SERVICE_SUBJECT_PREFIX):
            raise AuthError("invalid token: service subjects are the platform's own")
        groups = claim_at(claims, self._groups_claim)
        if isinstance(groups, str):
            groups = groups.split()
        if not isinstance(groups, list):
            groups = []
        grants = grants_of((g for g in groups if isinstance(g, str)), self._grants)
        if not grants:
            raise AuthError(f"token for {subject!r}: none of its groups is mapped to a team", forbidden=True)
        return Principal(
            subject,
            grants,
            token_id=str(claims.get("jti", "")),
            expires_at=float(claims["exp"]),
            issuer=self.issuer,
        )
