"""The HTTP side every service shares: FastAPI app with health and Prometheus routes,
bearer-token dependencies, one error body (:mod:`services.common.http_errors`), and a
uvicorn server that runs inside the service's loop, with TLS when the settings ask for it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from services.common.auth import AuthError, Principal, Scope, TokenVerifier, current_principal, denial
from services.common.http_errors import PlatformApp
from services.common.lifecycle import cancel
from services.common.metrics import shared_directory
from services.common.tls import ServerTls
from services.common.tracing import instrument_http

_bearer = HTTPBearer(
    auto_error=False, description="A platform token: `mlops token create` or the local stack's."
)
HttpDenialHook = Callable[[Request, AuthError], Awaitable[None]]


def create_app(
    title: str,
    version: str,
    *,
    verifier: TokenVerifier | None = None,
    ready: Callable[[], bool] = lambda: True,
    problems: Callable[[], Sequence[str]] = lambda: (),
    on_denied: HttpDenialHook | None = None,
    description: str = "",
    docs: bool = True,
) -> FastAPI:
    """A FastAPI app with ``/health/live``, ``/health/ready`` and ``/metrics`` (no auth on
    those) that answers every error with a problem-details body (:class:`PlatformApp`), and a
    span for every request to its other routes.

    ``/health/ready`` answers 503 while ``ready()`` is false, with ``problems()`` in the body:
    what keeps the service from doing its job (a consumer that is not consuming, and why).
    Without ``verifier`` no route may :func:`require_scope` (the console, which verifies no
    token itself); ``docs=False`` serves no OpenAPI document or documentation pages."""
    hidden: dict[str, None] = {} if docs else {"openapi_url": None, "docs_url": None, "redoc_url": None}
    app = PlatformApp(title=title, version=version, description=description, **hidden)
    instrument_http(app)
    app.state.verifier = verifier
    app.state.on_denied = on_denied

    @app.get("/health/live", tags=["health"], summary="The process is up.")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get(
        "/health/ready",
        tags=["health"],
        summary="The service can do its job.",
        responses={503: {"description": "Not ready yet, or shutting down."}},
    )
    async def readiness() -> Response:
        if ready():
            return Response('{"status":"ready"}', media_type="application/json")
        return JSONResponse({"status": "not ready", "problems": list(problems())}, status_code=503)

    exposition = _exposition()

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics.", include_in_schema=False)
    async def metrics() -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _exposition() -> Callable[[], bytes]:
    """What ``/metrics`` answers: this process's metrics, or, in a process whose metrics live in
    a directory it shares with the other workers of its replica, all of theirs merged (the
    library's multiprocess collector reads every worker's files on each scrape)."""
    directory = shared_directory()
    if directory is None:
        return generate_latest
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return lambda: generate_latest(registry)


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a request only with a valid token carrying ``scope``;
    otherwise it raises :class:`~services.common.errors.Unauthenticated` (401) or
    :class:`~services.common.errors.PermissionDenied` (403)."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        verifier: TokenVerifier = request.app.state.verifier
        try:
            principal = await verifier.authorize(request.headers.get("authorization"), scope)
        except AuthError as exc:
            hook: HttpDenialHook | None = request.app.state.on_denied
            if hook is not None:
                await hook(request, exc)
            raise denial(exc) from None
        current_principal.set(principal)
        return principal

    return dependency


class HttpServer:
    """Runs a FastAPI app with uvicorn inside the current event loop; with ``tls`` it
    speaks HTTPS only, and loads a renewed certificate every ``reload_seconds``.

    ``reuse_port`` binds with SO_REUSEPORT, so that several processes (a replica's workers)
    listen on one port and the kernel spreads connections over them."""

    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        *,
        tls: ServerTls | None = None,
        reload_seconds: float = 60.0,
        reuse_port: bool = False,
    ):
        self._tls = tls
        self._reload_seconds = reload_seconds
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                # One context of ours, whose certificate the reloader replaces for later handshakes.
                ssl_context_factory=(lambda _config, _default: tls.ssl_context())
                if tls is not None
                else None,
            )
        )
        self._sockets = [reuse_port_socket(host, port)] if reuse_port else None
        self._task: asyncio.Task[None] | None = None
        self._reloader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._tls is not None:
            self._reloader = asyncio.create_task(self._reload(self._tls), name="http-tls-reload")
        self._task = asyncio.create_task(self._server.serve(sockets=self._sockets), name="http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError("HTTP server exited during start-up")
            await asyncio.sleep(0.01)

    async def _reload(self, tls: ServerTls) -> None:
        while True:
            await asyncio.sleep(self._reload_seconds)
            await asyncio.to_thread(tls.reload_if_changed)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._reloader is not None:
            await cancel(self._reloader)
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
        for sock in self._sockets or ():
            sock.close()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (not listening yet)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock
