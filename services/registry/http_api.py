"""The REST mirror of the registry's gRPC API (FastAPI, with its OpenAPI document)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute

from services.common.auth import TokenVerifier
from services.common.http import create_app
from services.registry.registry import Registry
from services.registry.settings import RegistrySettings

HttpDenialHook = Callable[[Request, Exception], Awaitable[None]]


def request_id(request: Request) -> str:
    return (
        request.headers.get("x-request-id", "")[:128]
        or getattr(request.state, "request_id", "")
        or uuid.uuid4().hex
    )


def operation_name(request: Request) -> str:
    """The route's operation (named like the gRPC method), for the audit log."""
    route = request.scope.get("route")
    return route.name if isinstance(route, APIRoute) else request.url.path[:128]


def create_http_app(
    registry: Registry,
    settings: RegistrySettings,
    verifier: TokenVerifier,
    *,
    ready: Callable[[], bool],
    on_denied: Callable[..., Awaitable[None]] | None = None,
) -> FastAPI:
    app = create_app(
        "MLOps model registry",
        "1.0",
        verifier=verifier,
        ready=ready,
        on_denied=on_denied,
        description="Models, versions, aliases, approvals, lineage, artifacts and the audit log.",
    )
    return app
