"""Sessions: the person's token in an encrypted cookie, and the tokens that guard forms.

A session is the platform token the person signed in with, plus a random anti-forgery
token, sealed with Fernet (AES-128-CBC and HMAC-SHA256, from ``cryptography``) under a key
derived from ``CONSOLE_SESSION_KEY``. The cookie is HttpOnly and SameSite=Strict, so no
script and no other site can read or send it; sealed, so neither the browser's storage nor
a proxy's log shows the token, and a tampered cookie opens as no session at all.

What a token says about its holder (subject, scopes, teams, expiry) is read *without* verifying
its signature: the console has no key to verify it with, on purpose. Those claims only
decide what the console offers (an Approve button for a token with the approve scope);
what is allowed is decided by the platform's APIs, which verify the token on every call.
A forged token gets a session that every API call refuses.

No I/O here, and no clock read: callers pass ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import jwt
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.common.auth import ALL_TEAMS, DEFAULT_TEAM, Scope
from services.common.errors import InvalidArgument

MAX_TOKEN_CHARS = 8192
"""Longer than any platform or identity-provider token; more is not a token."""


@dataclass(frozen=True)
class Identity:
    """Who a token names and what it claims to allow (unverified: see the module docstring)."""

    subject: str
    scopes: frozenset[str]
    expires_at: float | None
    teams: frozenset[str] = frozenset({DEFAULT_TEAM})
    """The teams the scopes hold in (a token naming none acts for the default team)."""

    def may(self, scope: Scope | str, team: str = "") -> bool:
        """Whether the token claims ``scope`` (in ``team``, when given; ``admin`` claims every
        scope in every team)."""
        if Scope.ADMIN.value in self.scopes:
            return True
        in_team = not team or team in self.teams or ALL_TEAMS in self.teams
        return in_team and Scope(scope).value in self.scopes


def identity_of(token: str) -> Identity:
    """The claims of a platform token, read without verifying it.

    Raises :class:`InvalidArgument` (field ``token``) when the text is no JWT at all.

    >>> from services.common.auth import PlatformKeys
    >>> who = identity_of(PlatformKeys().mint("ana", Scope.READ, Scope.APPROVE, teams=["fraud"], ttl_seconds=60))
    >>> who.subject, sorted(who.scopes), sorted(who.teams), who.may(Scope.APPROVE), who.may(Scope.PROMOTE)
    ('ana', ['approve', 'read'], ['fraud'], True, False)
    >>> who.may(Scope.APPROVE, "fraud"), who.may(Scope.APPROVE, "churn")
    (True, False)
    >>> identity_of("not a token")
    Traceback (most recent call last):
    ...
    services.common.errors.InvalidArgument: token: not a platform token (expected a JWT)
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(f"token: expected 1 to {MAX_TOKEN_CHARS} characters", field="token")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise InvalidArgument("token: not a platform token (expected a JWT)", field="token") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidArgument("token: it names no subject", field="token")
    scope = claims.get("scope", "")
    expires = claims.get("exp")
    teams = claims.get("teams")
    return Identity(
        subject=subject,
        scopes=frozenset(str(scope).split()),
        expires_at=float(expires) if isinstance(expires, int | float) else None,
        teams=frozenset(str(t) for t in teams)
        if isinstance(teams, list) and teams
        else frozenset({DEFAULT_TEAM}),
    )


@dataclass(frozen=True)
class Session:
    """A signed-in person: their token and the anti-forgery token of their forms."""

    token: str
    csrf: str
    identity: Identity


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class SessionCodec:
    """Seals sessions into cookie values and opens them again.

    Parameters
    ----------
    key
        The secret both derive from (``CONSOLE_SESSION_KEY``): one key for the cookie's
        encryption, another for the sign-in form's anti-forgery tokens.
    ttl_seconds
        A sealed session opens for this long; a token that expires earlier ends it earlier.

    Examples
    --------
    >>> from services.common.auth import PlatformKeys
    >>> codec = SessionCodec(b"s" * 32, ttl_seconds=3600)
    >>> token = PlatformKeys().mint("ana", Scope.READ)
    >>> cookie = codec.seal(codec.start(token), now=1_000.0)
    >>> token in cookie  # the token is not readable in the cookie
    False
    >>> codec.open(cookie, now=1_100.0).identity.subject
    'ana'
    >>> codec.open(cookie, now=1_000.0 + 3601) is None  # the session is over
    True
    >>> codec.open(cookie[:-2] + "xx", now=1_100.0) is None  # tampered
    True
    """

    def __init__(self, key: bytes, ttl_seconds: int):
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(key, b"mlops-console-session")))
        self._forms = _derive(key, b"mlops-console-sign-in-form")
        self._ttl = ttl_seconds

    def start(self, token: str) -> Session:
        """A new session for ``token`` (:class:`InvalidArgument` if it is no token)."""
        return Session(token=token, csrf=secrets.token_urlsafe(32), identity=identity_of(token))

    def seal(self, session: Session, now: float) -> str:
        payload = json.dumps({"token": session.token, "csrf": session.csrf}).encode()
        return self._fernet.encrypt_at_time(payload, int(now)).decode()

    def open(self, cookie: str, now: float) -> Session | None:
        """The session in ``cookie``; None when it was tampered with, is over, or its token expired."""
        try:
            payload = json.loads(self._fernet.decrypt_at_time(cookie.encode(), self._ttl, int(now)))
            session = Session(payload["token"], payload["csrf"], identity_of(payload["token"]))
        except (InvalidToken, ValueError, KeyError, TypeError, InvalidArgument):
            return None
        expires = session.identity.expires_at
        return None if expires is not None and expires <= now else session

    def sign_in_form_token(self, nonce: str) -> str:
        """The anti-forgery token of the sign-in form, bound to a nonce kept in a cookie:
        before there is a session, a forged sign-in (into the attacker's account) is
        refused because another site can neither read the cookie nor compute this."""
        return hmac.new(self._forms, nonce.encode(), hashlib.sha256).hexdigest()

    def check_sign_in_form(self, nonce: str, value: str) -> bool:
        return bool(nonce) and hmac.compare_digest(self.sign_in_form_token(nonce), value)


def same_token(expected: str, given: str) -> bool:
    """Constant-time comparison of an anti-forgery token."""
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())
