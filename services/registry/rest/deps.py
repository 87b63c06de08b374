"""What routes depend on, as ``Annotated`` aliases: the registry, its settings, and the
caller authorized for a scope (``actor: Writer`` admits a token with the write scope and
names its subject for the audit log)."""

# No ``from __future__ import annotations`` here: FastAPI reads the dependency of
# :func:`caller` from its annotation at run time, and that names a local.
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from services.common.auth import Principal, Scope
from services.common.http import require_scope
from services.registry.registry import Actor, Registry
from services.registry.settings import RegistrySettings


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def get_settings(request: Request) -> RegistrySettings:
    settings: RegistrySettings = request.app.state.settings
    return settings


def request_id(request: Request) -> str:
    """The request's id: the caller's ``x-request-id``, or one made up for it."""
    value = getattr(request.state, "request_id", "")
    return value if isinstance(value, str) and value else uuid.uuid4().hex


def operation_name(request: Request) -> str:
    """The route's operation (named like the gRPC method), for the audit log."""
    route = request.scope.get("route")
    return route.name if isinstance(route, APIRoute) else request.url.path[:128]


def caller(scope: Scope) -> Callable[..., Awaitable[Actor]]:
    """A dependency admitting only a token with ``scope``: the caller, as the audit log names it."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(require_scope(scope))]
    ) -> Actor:
        return Actor(principal, request_id(request), "http")

    return dependency


RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[RegistrySettings, Depends(get_settings)]
Reader = Annotated[Actor, Depends(caller(Scope.READ))]
Writer = Annotated[Actor, Depends(caller(Scope.WRITE))]
Promoter = Annotated[Actor, Depends(caller(Scope.PROMOTE))]
Approver = Annotated[Actor, Depends(caller(Scope.APPROVE))]
Admin = Annotated[Actor, Depends(caller(Scope.ADMIN))]
