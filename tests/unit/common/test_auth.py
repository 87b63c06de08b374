"""Team-bound bearer tokens: what is admitted, what is refused, and why."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import json
import time
from collections.abc import Callable

import jwt
import pytest

from services.common.auth import (
    ALL_TEAMS,
    AuthError,
    KeySet,
    MethodScopes,
    PlatformKeys,
    Principal,
    Revocation,
    RevocationList,
    RevocationPoller,
    Scope,
    ServiceCredentials,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    jwks_json,
    parse_scopes,
)
from services.common.auth.keys import InvalidKey

KEYS = PlatformKeys()


def verifier(*keys: SigningKey, **kwargs: object) -> TokenVerifier:
    return TokenVerifier(KeySet.from_json(jwks_json(keys or (KEYS.issuer, KEYS.service))), **kwargs)  # type: ignore[arg-type]


def verify(token: str, *keys: SigningKey, **kwargs: object) -> Principal:
    return asyncio.run(verifier(*keys, **kwargs).verify(f"Bearer {token}"))


def test_a_token_carries_its_subject_scopes_teams_id_and_expiry() -> None:
    minted = TokenIssuer(KEYS.issuer).mint(
        "alice", [Scope.READ, Scope.PREDICT], teams=["alpha"], ttl_seconds=60
    )
    principal = verify(minted.token)
    assert (principal.subject, principal.token_id) == ("alice", minted.id)
    assert principal.may(Scope.PREDICT, "alpha") and not principal.may(Scope.PREDICT, "beta")
    assert not principal.allows(Scope.WRITE)
    assert principal.expires_at == minted.expires_at
    assert jwt.get_unverified_header(minted.token)["kid"] == KEYS.issuer.kid


def test_a_token_naming_no_team_acts_for_the_default_team_only() -> None:
    principal = verify(KEYS.mint("bob", Scope.WRITE))
    assert principal.teams == {"default"}
    assert principal.may(Scope.WRITE, "default") and not principal.acts_for("alpha")


def test_admin_holds_every_scope_in_every_team_and_all_teams_grants_hold_everywhere() -> None:
    root = verify(KEYS.mint("root", Scope.ADMIN))
    assert all(root.may(scope, "any-team") for scope in Scope) and root.visible_teams() is None
    service = Principal.of("service:trainer", [Scope.WRITE], teams=[ALL_TEAMS])
    assert service.may(Scope.WRITE, "beta") and not service.may(Scope.PROMOTE, "beta")
    assert service.visible_teams() is None


def _forged(claims: dict[str, object], key: SigningKey = KEYS.issuer, **header: str) -> str:
    return jwt.encode(claims, key.key, algorithm=key.algorithm, headers={"kid": key.kid, **header})


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": "mlops",
        "sub": "bob",
        "scope": "read",
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
        **overrides,
    }


@pytest.mark.parametrize(
    ("header", "message"),
    # Built when the test runs, not when it is collected: the claims carry times.
    [
        (lambda: None, "missing bearer token"),
        (lambda: "", "missing bearer token"),
        (lambda: "Basic abc", "authorization must be 'Bearer <token>'"),
        (lambda: "Bearer ", "authorization must be 'Bearer <token>'"),
        (lambda: "Bearer not-a-jwt", "invalid token"),
        (
            lambda: "Bearer " + PlatformKeys().mint("mallory", Scope.ADMIN),
            "invalid token: signed by an unknown key",
        ),
        # A known key id on a token another key signed.
        (
            lambda: "Bearer " + _forged(_claims(), PlatformKeys().issuer, kid=KEYS.issuer.kid),
            "Signature verification",
        ),
        # An HMAC token naming a trusted key id (algorithm confusion).
        (
            lambda: (
                "Bearer "
                + jwt.encode(
                    _claims(),
                    KEYS.issuer.public_jwk()["x"],
                    algorithm="HS256",
                    headers={"kid": KEYS.issuer.kid},
                )
            ),
            "The specified alg value is not allowed",
        ),
        (lambda: "Bearer " + _forged(_claims(exp=None)), "invalid token"),
        (
            lambda: "Bearer " + _forged({k: v for k, v in _claims().items() if k != "exp"}),
            'Token is missing the "exp"',
        ),
        (lambda: "Bearer " + _forged(_claims(iss="someone")), "issuer 'someone' is not trusted"),
        (lambda: "Bearer " + _forged(_claims(scope="read sudo")), "unknown scope 'sudo'"),
        (lambda: "Bearer " + _forged(_claims(teams=[])), "teams must be a non-empty list"),
        (lambda: "Bearer " + _forged(_claims(teams=["Alpha"])), "is not a team name"),
        (
            lambda: "Bearer " + _forged(_claims(exp=int(time.time()) - 60, iat=int(time.time()) - 120)),
            "token expired",
        ),
    ],
)
def test_unusable_tokens_are_unauthenticated(header: Callable[[], str | None], message: str) -> None:
    with pytest.raises(AuthError) as caught:
        asyncio.run(verifier().verify(header()))
    assert message in str(caught.value)
    assert not caught.value.forbidden


def test_a_service_key_signs_service_credentials_only_and_the_issuer_key_none() -> None:
    service_claims = _claims(sub="service:trainer", scope="read write", teams=["*"])
    assert verify(_forged(service_claims, KEYS.service)).may(Scope.WRITE, "beta")
    for claims in (_claims(sub="user:alice"), _claims(sub="service:trainer", scope="admin")):
        with pytest.raises(AuthError, match="a service key may sign only service credentials"):
            verify(_forged(claims, KEYS.service))
    with pytest.raises(AuthError, match="service subjects are signed with a service key only"):
        verify(_forged(service_claims, KEYS.issuer))


def test_rotation_keeps_tokens_of_the_previous_key_valid_while_it_is_trusted() -> None:
    old, new = SigningKey.generate(), SigningKey.generate("ES256")
    before = TokenIssuer(old).mint("carol", [Scope.READ], ttl_seconds=60).token
    after = TokenIssuer(new).mint("carol", [Scope.READ], ttl_seconds=60).token
    during = verifier(old, new)
    assert asyncio.run(during.verify(f"Bearer {before}")).subject == "carol"
    assert asyncio.run(during.verify(f"Bearer {after}")).subject == "carol"
    with pytest.raises(AuthError, match="unknown key"):
        verify(before, new)


def test_a_revoked_token_is_refused_even_once_verified_and_cached() -> None:
    revocations = RevocationList()
    checking = verifier(revocations=revocations)
    minted = TokenIssuer(KEYS.issuer).mint("dave", [Scope.READ], ttl_seconds=60)
    assert asyncio.run(checking.verify(f"Bearer {minted.token}")).token_id == minted.id
    revocations.add([Revocation(minted.id, revoked_at=time.time(), expires_at=minted.expires_at)])
    with pytest.raises(AuthError, match="token revoked"):
        asyncio.run(checking.verify(f"Bearer {minted.token}"))


def test_a_cached_token_expires_on_time() -> None:
    now = [time.time()]
    checking = verifier(clock=lambda: now[0], leeway=0)
    minted = TokenIssuer(KEYS.issuer).mint("erin", [Scope.READ], ttl_seconds=60)
    assert asyncio.run(checking.verify(f"Bearer {minted.token}")).subject == "erin"
    now[0] = minted.expires_at + 1
    with pytest.raises(AuthError, match="token expired"):
        asyncio.run(checking.verify(f"Bearer {minted.token}"))


def test_every_token_expires() -> None:
    with pytest.raises(ValueError, match="every token expires"):
        TokenIssuer(KEYS.issuer).mint("frank", [Scope.READ], ttl_seconds=0)


def test_missing_scope_is_forbidden_and_names_it() -> None:
    with pytest.raises(AuthError) as caught:
        asyncio.run(verifier().authorize(f"Bearer {KEYS.mint('carol', Scope.READ)}", Scope.PROMOTE))
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


def test_service_credentials_are_scoped_reused_until_renewal_and_need_a_service_key() -> None:
    now = [time.time()]
    credentials = ServiceCredentials(KEYS.service, "trainer", [Scope.READ, Scope.WRITE], clock=lambda: now[0])
    first = credentials()
    assert credentials() == first
    principal = verify(first)
    assert principal.subject == "service:trainer"
    assert principal.scopes == {Scope.READ, Scope.WRITE} and principal.visible_teams() is None
    now[0] += 3600 * 0.9
    assert credentials() != first
    with pytest.raises(ValueError, match="need a service key"):
        ServiceCredentials(KEYS.issuer, "trainer", [Scope.READ])
    with pytest.raises(ValueError, match="at most"):
        ServiceCredentials(KEYS.service, "trainer", [Scope.ADMIN])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not JSON"),
        ('{"keys": []}', "at least one key"),
        (json.dumps({"keys": [{**KEYS.issuer.public_jwk(), "kid": ""}]}), "needs a kid"),
        (json.dumps({"keys": [KEYS.issuer.public_jwk(), KEYS.issuer.public_jwk()]}), "appears twice"),
        (
            json.dumps(
                {"keys": [{**KEYS.issuer.public_jwk(), "d": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI"}]}
            ),
            "holds a private key",
        ),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}), "keys[0]"),
    ],
)
def test_a_key_set_that_cannot_be_used_is_refused_naming_why(document: str, message: str) -> None:
    with pytest.raises(InvalidKey, match=message.replace("[", r"\[").replace("]", r"\]")):
        KeySet.from_json(document)


async def test_the_poller_reads_revocations_incrementally_with_an_overlap() -> None:
    asked: list[float] = []
    answers = [
        [Revocation("a", revoked_at=1000.0, expires_at=time.time() + 60)],
        [Revocation("b", revoked_at=1010.0, expires_at=time.time() + 60)],
    ]

    async def source(since: float) -> list[Revocation]:
        asked.append(since)
        return answers.pop(0) if answers else []

    revocations = RevocationList()
    poller = RevocationPoller(source, revocations, interval=60, overlap=30)
    await poller.poll()
    await poller.poll()
    await poller.poll()
    assert asked == [0.0, 970.0, 980.0]
    assert revocations.revoked("a") and revocations.revoked("b") and poller.synced.is_set()


@pytest.mark.parametrize(
    "module",
    ["principal", "keys", "tokens", "oidc", "revocation"],
)
def test_doctests(module: str) -> None:
    assert doctest.testmod(importlib.import_module(f"services.common.auth.{module}")).failed == 0
