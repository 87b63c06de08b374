"""The console's HTTP app: pages rendered on the server, security headers on every answer,
the session on every request, and errors as pages a person can read.

Every page asks the platform's APIs with the signed-in person's token (set in
:data:`~services.console.backends.current_token` by :func:`person`), so what a page shows
is what that token may read, and an action the token may not take is refused by the API
that owns it, not by the console.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from services.common.clients.registry import MODEL_NAME
from services.common.errors import (
    Kind,
    NotFound,
    PermissionDenied,
    PlatformError,
    Unauthenticated,
    error_of,
    kind_of_http_status,
)
from services.common.http import create_app
from services.common.http_errors import validation_error
from services.common.logging import get_logger
from services.console import filters
from services.console.backends import HttpApi, Monitors, Registry, current_token
from services.console.follower import JobFollower
from services.console.jobs import Jobs
from services.console.session import Session, SessionCodec, same_token
from services.console.settings import ConsoleSettings

log = get_logger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "mlops_console"
SIGN_IN_COOKIE = "mlops_console_sign_in"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""Nothing inline, nothing evaluated, nothing from elsewhere, and no framing."""

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass
class Console:
    """What every route works with (``request.app.state.console``)."""

    settings: ConsoleSettings
    codec: SessionCodec
    registry: Registry
    monitors: Monitors
    ingest: HttpApi
    jobs: Jobs
    follower: JobFollower
    clock: Callable[[], float] = time.time
    templates: Jinja2Templates = field(init=False)

    def __post_init__(self) -> None:
        self.templates = Jinja2Templates(directory=HERE / "templates")
        filters.install(self.templates.env)


class SignInRequired(Exception):
    """The request needs a session and has none (or its session is over)."""


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    console = console_of(request)
    return console.codec.open(cookie, console.clock())


async def person(request: Request) -> Session:
    """The signed-in person; their token is what every API call of this request carries."""
    session = session_of(request)
    if session is None:
        raise SignInRequired()
    current_token.set(session.token)
    request.state.session = session
    return session


async def form_checked(request: Request, session: Annotated[Session, Depends(person)]) -> dict[str, str]:
    """The form of a state-changing request, once its anti-forgery token matches the
    session's (a form another site made cannot carry it)."""
    form = await request.form()
    given = request.headers.get(CSRF_HEADER) or str(form.get(CSRF_FIELD, ""))
    if not same_token(session.csrf, given):
        raise PermissionDenied("this form expired or came from another site: reload the page and try again")
    return {key: value for key, value in form.items() if isinstance(value, str)}


ConsoleDep = Annotated[Console, Depends(console_of)]
Person = Annotated[Session, Depends(person)]
Form = Annotated[dict[str, str], Depends(form_checked)]


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page (or, for htmx, a fragment) with what every template needs."""
    console = console_of(request)
    session: Session | None = getattr(request.state, "session", None) or session_of(request)
    values = {
        "request": request,
        "session": session,
        "who": session.identity if session else None,
        "csrf_token": session.csrf if session else "",
        "refresh_seconds": console.settings.refresh_seconds,
        "htmx_headers": json.dumps({CSRF_HEADER: session.csrf}) if session else "",
        **context,
    }
    response = console.templates.TemplateResponse(request, template, values, status_code=status)
    response.headers["cache-control"] = "no-store"
    return response


def checked_name(name: str) -> str:
    """A model name from a URL, refused as not found unless the registry could hold it."""
    if not MODEL_NAME.fullmatch(name):
        raise NotFound(f"no model {name[:140]!r}: not a model name", field="name")
    return name


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def redirect(request: Request, url: str) -> Response:
    """A redirect a browser follows, and htmx too (it would swap a 303's page into a fragment)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"hx-redirect": url})
    return RedirectResponse(url, status_code=303)


def sign_in_url(request: Request, reason: str = "") -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"/login?next={quote(target, safe='')}"
    return url + (f"&reason={reason}" if reason else "")


def _install_handlers(app: FastAPI) -> None:
    async def sign_in(request: Request, exc: Exception) -> Response:
        return redirect(request, sign_in_url(request))

    async def platform_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PlatformError)
        if isinstance(exc, Unauthenticated) and request.cookies.get(SESSION_COOKIE):
            # The API no longer takes this token (expired, revoked): the session is over.
            response = redirect(request, sign_in_url(request, "refused"))
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        return error_page(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_page(
            request, error_of(kind_of_http_status(exc.status_code), str(exc.detail)), exc.status_code
        )

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_page(request, validation_error(exc))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("console_page_failed", path=request.url.path, error=repr(exc))
        return error_page(
            request, error_of(Kind.INTERNAL, "something went wrong here; see the console's log")
        )

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(PlatformError, platform_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def error_page(request: Request, error: PlatformError, status: int | None = None) -> Response:
    template = "_error.html" if is_htmx(request) else "error.html"
    return render(request, template, {"error": error}, status or error.kind.http_status)


def create_http_app(console: Console, *, ready: Callable[[], bool]) -> FastAPI:
    from services.console.routes import actions, datasets, models, monitoring, sign_in, training

    app = create_app("mlops console", console.settings.code_version, ready=ready, docs=False)
    app.state.console = console
    _install_handlers(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if console.settings.secure_cookies:
            response.headers["strict-transport-security"] = "max-age=31536000"
        return response

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        return redirect(request, "/models")

    # models before actions: its /versions/{version}/lineage is not an action.
    for routes in (sign_in, models, actions, monitoring, training, datasets):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
