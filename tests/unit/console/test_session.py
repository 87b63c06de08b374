"""Sessions: what a cookie carries, what opens it, and when it stops opening."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from services.common.auth import Scope
from services.common.errors import InvalidArgument
from services.console.session import SessionCodec, identity_of, same_token
from tests.helpers.keys import KEYS

SECRET = "platform-secret-" * 3
"""Signs hand-made tokens: the console reads claims without verifying them."""
NOW = float(int(time.time()))
"""The tests' clock: the present, in which the tokens minted for them are valid (an hour)."""


def codec(key: bytes = b"k" * 32, ttl: int = 3600) -> SessionCodec:
    return SessionCodec(key, ttl_seconds=ttl)


def test_the_cookie_hides_the_token_and_its_claims() -> None:
    token = KEYS.mint("ana", Scope.READ, Scope.APPROVE)
    cookie = codec().seal(codec().start(token), NOW)
    claims = token.split(".")[1]
    assert token not in cookie and claims not in cookie
    assert b"ana" not in base64.urlsafe_b64decode(cookie + "==")


def test_only_the_same_key_opens_a_session_and_a_changed_byte_opens_none() -> None:
    session = codec().start(KEYS.mint("ana", Scope.READ))
    cookie = codec().seal(session, NOW)
    opened = codec().open(cookie, NOW + 1)
    assert opened is not None and opened.token == session.token and opened.csrf == session.csrf
    assert codec(b"x" * 32).open(cookie, NOW + 1) is None
    for position in (10, len(cookie) // 2, len(cookie) - 5):
        flipped = cookie[:position] + ("A" if cookie[position] != "A" else "B") + cookie[position + 1 :]
        assert codec().open(flipped, NOW + 1) is None
    assert codec().open("", NOW) is None and codec().open("garbage", NOW) is None


def test_a_session_ends_with_its_lifetime_or_its_token_whichever_is_first() -> None:
    long_lived = codec().start(KEYS.mint("ana", Scope.READ))
    cookie = codec(ttl=600).seal(long_lived, NOW)
    assert codec(ttl=600).open(cookie, NOW + 599) is not None
    assert codec(ttl=600).open(cookie, NOW + 601) is None
    expiring = jwt.encode({"iss": "mlops", "sub": "ana", "iat": int(NOW), "exp": int(NOW) + 60}, SECRET)
    cookie = codec().seal(codec().start(expiring), NOW)
    assert codec().open(cookie, NOW + 59) is not None
    assert codec().open(cookie, NOW + 61) is None


def test_each_session_has_its_own_anti_forgery_token() -> None:
    token = KEYS.mint("ana", Scope.READ)
    one, two = codec().start(token), codec().start(token)
    assert one.csrf != two.csrf and len(one.csrf) >= 32
    assert same_token(one.csrf, one.csrf)
    assert not same_token(one.csrf, two.csrf) and not same_token("", "") and not same_token(one.csrf, "")


def test_the_sign_in_form_token_is_bound_to_its_nonce_and_key() -> None:
    form = codec().sign_in_form_token("nonce-1")
    assert codec().check_sign_in_form("nonce-1", form)
    assert not codec().check_sign_in_form("nonce-2", form)
    assert not codec(b"x" * 32).check_sign_in_form("nonce-1", form)
    assert not codec().check_sign_in_form("", codec().sign_in_form_token(""))


@pytest.mark.parametrize(
    "text",
    ["", "not.a.jwt", "a" * 9000, jwt.encode({"iss": "mlops", "iat": 1}, SECRET), "Bearer x"],
)
def test_what_is_not_a_platform_token_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        codec().start(text)
    assert refused.value.field == "token"


def test_claims_are_read_for_display_and_admin_claims_every_scope() -> None:
    root = identity_of(KEYS.mint("root", Scope.ADMIN))
    assert all(root.may(scope) for scope in Scope)
    reader = identity_of(KEYS.mint("rita", Scope.READ, teams=["alpha", "beta"], ttl_seconds=60))
    assert reader.may("read") and not reader.may(Scope.APPROVE)
    assert reader.teams == {"alpha", "beta"} and reader.expires_at is not None
    assert identity_of(KEYS.mint("rita", Scope.READ)).teams == {"default"}, "no team named: the default"
    # Claims the platform does not know yet (another issuer's) are kept, not fatal.
    other = jwt.encode({"sub": "sso-user", "scope": "read teams:alpha", "exp": int(NOW)}, "k" * 32)
    assert identity_of(other).scopes == {"read", "teams:alpha"}
    assert json.loads(base64.urlsafe_b64decode(other.split(".")[1] + "=="))["sub"] == "sso-user"
