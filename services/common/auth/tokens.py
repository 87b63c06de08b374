"""Bearer tokens: minting them (the issuer) and checking them (every service).

A platform token is a JWT signed with one of the platform's keys (see :mod:`.keys`) and
names that key in its header (``kid``). Its claims: ``iss`` (``mlops``), ``sub`` (who),
``scope`` (space-separated, as OAuth 2 writes them), ``teams`` (the teams it may act for,
with those scopes in each; absent: the default team), ``iat``, ``exp`` (every token
expires) and ``jti`` (its id, by which it can be revoked).

The verifier also admits tokens of one external OpenID Connect provider (see :mod:`.oidc`)
and refuses any token on the revocation list (see :mod:`.revocation`), on every call.

>>> from services.common.auth.keys import KeySet, SigningKey, jwks_json
>>> key = SigningKey.generate()
>>> minted = TokenIssuer(key).mint("alice", [Scope.READ], teams=["alpha"], ttl_seconds=60)
>>> verifier = TokenVerifier(KeySet.from_json(jwks_json([key])))
>>> principal = asyncio.run(verifier.verify(f"Bearer {minted.token}"))
>>> principal.subject, sorted(principal.teams), principal.token_id == minted.id
('alice', ['alpha'], True)
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from services.common.auth.keys import SERVICE_KEY_PREFIX, KeySet, SigningKey, jwks_json
from services.common.auth.principal import (
    ALL_TEAMS,
    DEFAULT_TEAM,
    SERVICE_SUBJECT_PREFIX,
    Principal,
    Scope,
    check_team_name,
    parse_scopes,
)
from services.common.auth.revocation import RevocationList
from services.common.errors import PermissionDenied, PlatformError, Unauthenticated

ISSUER = "mlops"
"""``iss`` of the platform's own tokens."""
SERVICE_SCOPES = frozenset({Scope.READ, Scope.WRITE, Scope.PREDICT})
"""The most a service credential may hold: services read models and data, the trainer
registers versions and has serving score its batch jobs; nothing promotes, approves or
administers on a service's word."""
MAX_SUBJECT_LENGTH = 256
LEEWAY_SECONDS = 30.0
"""Clock difference tolerated between the issuer and a verifier."""


class AuthError(Exception):
    """A request without a usable token (401) or without the scope it needs (403)."""

    def __init__(self, message: str, *, forbidden: bool = False, principal: Principal | None = None):
        super().__init__(message)
        self.forbidden = forbidden
        self.principal = principal


def denial(exc: AuthError) -> PlatformError:
    """The platform error a refused token stands for: unauthenticated, or denied the scope."""
    return PermissionDenied(str(exc)) if exc.forbidden else Unauthenticated(str(exc))


def verified_claims(token: str, key: jwt.PyJWK, *, require: Sequence[str], **checks: Any) -> dict[str, Any]:
    """The claims of ``token`` if ``key`` signed it (with the key's own algorithm, so a token
    cannot pick a weaker one) and ``checks`` (issuer, audience, leeway) hold; AuthError if not."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[key.algorithm_name], options={"require": list(require)}, **checks
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    return claims


def check_subject(subject: str) -> str:
    """``subject`` if it can name a token's holder (printable, at most 256 characters)."""
    if not subject.strip() or len(subject) > MAX_SUBJECT_LENGTH or not subject.isprintable():
        raise ValueError(f"subject must be 1 to {MAX_SUBJECT_LENGTH} printable characters")
    return subject


@dataclass(frozen=True)
class MintedToken:
    """A token just signed, and what it says."""

    token: str
    id: str
    subject: str
    scopes: frozenset[Scope]
    teams: tuple[str, ...]
    """Empty: the default team."""
    issued_at: float
    expires_at: float


class TokenIssuer:
    """Signs platform tokens with one key (the registry's, or a service's own)."""

    def __init__(self, key: SigningKey, *, issuer: str = ISSUER, clock: Callable[[], float] = time.time):
        self.key = key
        self._issuer = issuer
        self._clock = clock

    def mint(
        self,
        subject: str,
        scopes: Iterable[Scope | str],
        *,
        teams: Sequence[str] = (),
        ttl_seconds: float,
    ) -> MintedToken:
        """A token for ``subject`` with ``scopes`` in each of ``teams``, valid ``ttl_seconds``."""
        check_subject(subject)
        held = frozenset(Scope(s) for s in scopes)
        for team in teams:
            check_team_name(team, wildcard=True)
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be positive: every token expires")
        now = int(self._clock())
        token_id = uuid.uuid4().hex
        expires_at = now + max(1, int(ttl_seconds))
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "scope": " ".join(sorted(s.value for s in held)),
            "iat": now,
            "exp": expires_at,
            "jti": token_id,
        }
        if teams:
            claims["teams"] = sorted(set(teams))
        token = jwt.encode(claims, self.key.key, algorithm=self.key.algorithm, headers={"kid": self.key.kid})
        return MintedToken(token, token_id, subject, held, tuple(sorted(set(teams))), now, expires_at)


class ExternalIssuer(Protocol):
    """A trusted issuer other than the platform (an OpenID Connect provider)."""

    issuer: str

    def principal(self, token: str) -> Principal:
        """The principal ``token`` stands for; AuthError if it does not verify. May block
        (fetching keys), so the verifier calls it in a thread."""
        ...


def platform_principal(claims: Mapping[str, Any], *, service_key: bool) -> Principal:
    """The principal of a verified platform token's claims; AuthError if they say too much."""
    subject = str(claims["sub"])
    try:
        check_subject(subject)
        scopes = parse_scopes(str(claims.get("scope", "")).split())
        listed = claims.get("teams", [DEFAULT_TEAM])
        if not isinstance(listed, list) or not listed or not all(isinstance(t, str) for t in listed):
            raise ValueError("teams must be a non-empty list of team names")
        teams = [check_team_name(team, wildcard=True) for team in listed]
    except ValueError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    if service_key:
        if not subject.startswith(SERVICE_SUBJECT_PREFIX) or not scopes <= SERVICE_SCOPES:
            raise AuthError("invalid token: a service key may sign only service credentials")
    elif subject.startswith(SERVICE_SUBJECT_PREFIX):
        raise AuthError("invalid token: service subjects are signed with a service key only")
    return Principal.of(
        subject,
        scopes,
        teams,
        token_id=str(claims["jti"]),
        expires_at=float(claims["exp"]),
        issuer=str(claims["iss"]),
    )


class TokenVerifier:
    """Checks bearer tokens: signature, issuer, expiry, revocation and scope.

    A verified token is cached until it expires (the signature is checked once); whether
    it was revoked since is asked on every call.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        revocations: RevocationList | None = None,
        external: ExternalIssuer | None = None,
        issuer: str = ISSUER,
        leeway: float = LEEWAY_SECONDS,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ):
        self.keys = keys
        self.revocations = revocations
        self._external = external
        self._issuer = issuer
        self._leeway = leeway
        self._clock = clock
        self._cache: collections.OrderedDict[str, Principal] = collections.OrderedDict()
        self._cache_size = cache_size

    async def verify(self, authorization: str | None) -> Principal:
        """The principal behind an ``Authorization: Bearer <token>`` value."""
        if not authorization:
            raise AuthError("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("authorization must be 'Bearer <token>'")
        principal = self._cache.get(token)
        if principal is None:
            principal = await self._decode(token)
            self._cache[token] = principal
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(token)
        if principal.expires_at is not None and principal.expires_at + self._leeway < self._clock():
            raise AuthError("token expired")
        if self.revocations is not None and self.revocations.revoked(principal.token_id):
            raise AuthError("token revoked")
        return principal

    async def authorize(self, authorization: str | None, scope: Scope) -> Principal:
        """The principal, if it holds ``scope`` in some team (the resource's team is the use
        case's to check); AuthError otherwise."""
        principal = await self.verify(authorization)
        if not principal.allows(scope):
            raise AuthError(
                f"token for {principal.subject!r} lacks scope {scope.value!r}",
                forbidden=True,
                principal=principal,
            )
        return principal

    async def _decode(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        if issuer == self._issuer:
            return self._platform(token, header)
        if self._external is not None and issuer == self._external.issuer:
            return await asyncio.to_thread(self._external.principal, token)
        raise AuthError(f"invalid token: issuer {str(issuer)[:100]!r} is not trusted")

    def _platform(self, token: str, header: Mapping[str, Any]) -> Principal:
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthError(f"invalid token: signed by an unknown key (kid {str(kid)[:64]!r})")
        claims = verified_claims(
            token, key, require=["sub", "iss", "iat", "exp", "jti"], issuer=self._issuer, leeway=self._leeway
        )
        return platform_principal(claims, service_key=str(kid).startswith(SERVICE_KEY_PREFIX))


class ServiceCredentials:
    """The token a service presents when it calls another: subject ``service:<name>``, only
    the scopes it needs (at most :data:`SERVICE_SCOPES`), in every team, short-lived and
    re-minted before it expires. Signed with the deployment's service key, which verifiers
    accept for service credentials only."""

    def __init__(
        self,
        key: SigningKey,
        service: str,
        scopes: Iterable[Scope],
        ttl_seconds: float = 3600,
        clock: Callable[[], float] = time.time,
    ):
        if not key.service:
            raise ValueError(f"service credentials need a service key (kid starting {SERVICE_KEY_PREFIX!r})")
        self._issuer = TokenIssuer(key, clock=clock)
        self._subject = f"{SERVICE_SUBJECT_PREFIX}{service}"
        self._scopes = frozenset(scopes)
        if not self._scopes <= SERVICE_SCOPES:
            raise ValueError(f"service credentials hold at most {sorted(s.value for s in SERVICE_SCOPES)}")
        self._ttl = ttl_seconds
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = self._clock()
        if now >= self._renew_at:
            minted = self._issuer.mint(self._subject, self._scopes, teams=[ALL_TEAMS], ttl_seconds=self._ttl)
            self._token = minted.token
            self._renew_at = now + self._ttl * 0.8
        return self._token


@dataclass(frozen=True)
class PlatformKeys:
    """A deployment's two token keys made together, for the local stack, tests and
    benchmarks: the issuer's (the registry signs tokens with it) and the service key
    (services sign their own calls with it). Every service trusts both, and nothing else."""

    issuer: SigningKey = field(default_factory=SigningKey.generate)
    service: SigningKey = field(default_factory=lambda: SigningKey.generate(service=True))

    @property
    def public_keys(self) -> str:
        """``MLOPS_AUTH_PUBLIC_KEYS``."""
        return jwks_json([self.issuer, self.service])

    def env(self) -> dict[str, str]:
        """The platform variables every service but the registry needs."""
        return {"MLOPS_AUTH_PUBLIC_KEYS": self.public_keys, "MLOPS_SERVICE_KEY": self.service.private_pem()}

    def mint(self, subject: str, *scopes: Scope, teams: Sequence[str] = (), ttl_seconds: float = 3600) -> str:
        """A token signed with the issuer key, as the registry would issue it."""
        return TokenIssuer(self.issuer).mint(subject, scopes, teams=teams, ttl_seconds=ttl_seconds).token
