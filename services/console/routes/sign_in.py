"""Signing in with a platform token, and signing out.

The token is checked by the registry (a one-model read) before a session starts: a token
the platform refuses, or one without the read scope, gets no session. Single sign-on plugs
in here: an identity provider's login redirect ends, like the form, in :func:`start_session`
with the token the platform accepts (see docs/console.md).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from services.common.errors import InvalidArgument, PermissionDenied, PlatformError, Unauthenticated
from services.common.logging import get_logger
from services.console import metrics
from services.console.backends import current_token
from services.console.session import Session
from services.console.web import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Console,
    ConsoleDep,
    redirect,
    render,
    session_of,
)
from services.console.web import (
    Form as CheckedForm,
)

router = APIRouter()
log = get_logger(__name__)

REASONS = {
    "refused": "The platform no longer accepts your token (it expired or was revoked). Sign in again.",
    "signed_out": "You are signed out.",
}
SIGN_IN_FORM_SECONDS = 3600


def safe_next(target: str) -> str:
    """Where to go after signing in: a path on this site only, never another site.

    >>> safe_next("/models/churn?tab=versions"), safe_next("//evil.example"), safe_next("https://evil.example")
    ('/models/churn?tab=versions', '/models', '/models')
    """
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/models"
    return target


def _sign_in_page(request: Request, console: Console, *, error: str = "", status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {
            "form_token": console.codec.sign_in_form_token(nonce),
            "next": safe_next(request.query_params.get("next", "/models")),
            "notice": REASONS.get(request.query_params.get("reason", ""), ""),
            "error": error,
        },
        status,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        nonce,
        max_age=SIGN_IN_FORM_SECONDS,
        path="/login",
        httponly=True,
        secure=console.settings.secure_cookies,
        samesite="strict",
    )
    return response


@router.get("/login", include_in_schema=False)
async def sign_in_form(request: Request, console: ConsoleDep) -> Response:
    if session_of(request) is not None:
        return redirect(request, safe_next(request.query_params.get("next", "/models")))
    return _sign_in_page(request, console)


async def _check_with_platform(console: Console, session: Session) -> None:
    """The registry takes the token for a read: its signature and expiry are good and it
    carries the read scope (every page needs it)."""
    current_token.set(session.token)
    await console.registry.models_page(page_size=1)


def start_session(response: Response, console: Console, session: Session) -> Response:
    """Put ``session`` in the session cookie of ``response``: the one way a session starts."""
    now = console.clock()
    lifetime = console.settings.session_ttl_seconds
    if session.identity.expires_at is not None:
        lifetime = min(lifetime, int(session.identity.expires_at - now))
    response.set_cookie(
        SESSION_COOKIE,
        console.codec.seal(session, now),
        max_age=lifetime,
        path="/",
        httponly=True,
        secure=console.settings.secure_cookies,
        samesite="strict",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/login")
    return response


@router.post("/login", include_in_schema=False)
async def sign_in(
    request: Request,
    console: ConsoleDep,
    token: Annotated[str, Form(max_length=16384)] = "",
    form_token: Annotated[str, Form(max_length=256)] = "",
    target: Annotated[str, Form(alias="next", max_length=2048)] = "/models",
) -> Response:
    if not console.codec.check_sign_in_form(request.cookies.get(SIGN_IN_COOKIE, ""), form_token):
        metrics.SIGN_INS.labels("forged_form").inc()
        return _sign_in_page(
            request,
            console,
            error="The sign-in form expired or came from another site. Try again.",
            status=403,
        )
    token = token.strip().removeprefix("Bearer ").strip()
    try:
        session = console.codec.start(token)
        expires = session.identity.expires_at
        if expires is not None and expires <= console.clock():
            raise Unauthenticated("token: it has expired")
        await _check_with_platform(console, session)
    except PlatformError as exc:
        outcome, status, error = _refusal(exc)
        metrics.SIGN_INS.labels(outcome).inc()
        return _sign_in_page(request, console, error=error, status=status)
    metrics.SIGN_INS.labels("accepted").inc()
    log.info("console_sign_in", subject=session.identity.subject)
    return start_session(redirect(request, safe_next(target)), console, session)


def _refusal(error: PlatformError) -> tuple[str, int, str]:
    """Why a token starts no session: (the metric's outcome, the status, what the page says)."""
    if isinstance(error, InvalidArgument):
        return "not_a_token", 400, f"That is not a platform token ({error.message})."
    if isinstance(error, Unauthenticated):
        return "refused", 401, f"The platform refused this token: {error.message}"
    if isinstance(error, PermissionDenied):
        return "refused", 403, "This token lacks the read scope, which every page needs."
    return "unavailable", 503, f"The registry could not check the token: {error.message}"


@router.post("/logout", include_in_schema=False)
async def sign_out(request: Request, form: CheckedForm) -> Response:
    response = redirect(request, "/login?reason=signed_out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
