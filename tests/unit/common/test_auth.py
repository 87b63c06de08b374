"""Scoped bearer tokens: what is admitted, what is refused, and why."""

from __future__ import annotations

import time

import jwt
import pytest

from services.common.auth import (
    AuthError,
    MethodScopes,
    Scope,
    ServiceCredentials,
    TokenVerifier,
    mint_token,
    parse_scopes,
)

SECRET = "s" * 48


def test_a_token_carries_its_subject_and_scopes() -> None:
    verifier = TokenVerifier(SECRET)
    principal = verifier.verify("Bearer " + mint_token(SECRET, "alice", [Scope.READ, Scope.PREDICT]))
    assert principal.subject == "alice"
    assert principal.allows(Scope.PREDICT)
    assert not principal.allows(Scope.WRITE)


def test_admin_implies_every_scope() -> None:
    principal = TokenVerifier(SECRET).verify("Bearer " + mint_token(SECRET, "root", [Scope.ADMIN]))
    assert all(principal.allows(scope) for scope in Scope)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Basic abc", "authorization must be 'Bearer <token>'"),
        ("Bearer ", "authorization must be 'Bearer <token>'"),
        ("Bearer not-a-jwt", "invalid token"),
        (
            "Bearer " + mint_token("x" * 48, "mallory", [Scope.ADMIN]),
            "invalid token: Signature verification failed",
        ),
    ],
)
def test_unusable_tokens_are_unauthenticated(header: str | None, message: str) -> None:
    with pytest.raises(AuthError) as caught:
        TokenVerifier(SECRET).verify(header)
    assert str(caught.value).startswith(message)
    assert not caught.value.forbidden


def test_expired_token_is_refused() -> None:
    token = jwt.encode(
        {
            "iss": "mlops",
            "sub": "bob",
            "scope": "read",
            "iat": int(time.time()) - 100,
            "exp": int(time.time()) - 10,
        },
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(AuthError, match="token expired"):
        TokenVerifier(SECRET).verify(f"Bearer {token}")


def test_a_token_with_an_unknown_scope_is_refused_not_trimmed() -> None:
    token = jwt.encode(
        {"iss": "mlops", "sub": "bob", "scope": "read sudo", "iat": 1}, SECRET, algorithm="HS256"
    )
    with pytest.raises(AuthError, match="unknown scope 'sudo'"):
        TokenVerifier(SECRET).verify(f"Bearer {token}")


def test_missing_scope_is_forbidden_and_names_it() -> None:
    token = mint_token(SECRET, "carol", [Scope.READ])
    with pytest.raises(AuthError) as caught:
        TokenVerifier(SECRET).authorize(f"Bearer {token}", Scope.PROMOTE)
    assert caught.value.forbidden
    assert "lacks scope 'promote'" in str(caught.value)


def test_method_scopes_fall_back_to_the_default() -> None:
    scopes = MethodScopes(default=Scope.READ, methods={"SetAlias": Scope.PROMOTE})
    assert scopes.for_method("/mlops.v1.RegistryService/SetAlias") == Scope.PROMOTE
    assert scopes.for_method("/mlops.v1.RegistryService/GetModel") == Scope.READ


def test_parse_scopes_refuses_unknown_names() -> None:
    assert parse_scopes(["READ", " write "]) == {Scope.READ, Scope.WRITE}
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes(["everything"])


def test_service_credentials_are_scoped_and_reused_until_renewal() -> None:
    credentials = ServiceCredentials(SECRET, "trainer", [Scope.READ, Scope.WRITE])
    first = credentials()
    assert credentials() == first
    principal = TokenVerifier(SECRET).verify(f"Bearer {first}")
    assert principal.subject == "service:trainer"
    assert principal.scopes == {Scope.READ, Scope.WRITE}
    assert principal.expires_at is not None
