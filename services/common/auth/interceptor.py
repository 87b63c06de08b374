"""The gRPC side of authentication: every call's bearer token and scope checked before
its method runs, and the caller made available to the method.

The verified principal and the request id (``x-request-id`` metadata, or a new one) are
available to the handler through :data:`current_principal` and :data:`current_request_id`,
and bound into the log context.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from services.common.auth.principal import Principal, Scope
from services.common.auth.tokens import AuthError, TokenVerifier, denial
from services.common.errors import PlatformError
from services.common.grpc_errors import abort
from services.common.grpc_handlers import Request, Response, ServicerContext, Wrapper, rewrap_handler

PUBLIC_GRPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "current_principal", default=None
)
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("current_request_id", default="")

DenialHook = Callable[[str, AuthError, str], Awaitable[None]]


@dataclass
class MethodScopes:
    """The scope each gRPC method needs; methods not listed need ``default``."""

    default: Scope
    methods: Mapping[str, Scope] = field(default_factory=dict)

    def for_method(self, method: str) -> Scope:
        return self.methods.get(method.rsplit("/", 1)[-1], self.default)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token and scope of every call except health and reflection."""

    def __init__(self, verifier: TokenVerifier, scopes: MethodScopes, on_denied: DenialHook | None = None):
        self._verifier = verifier
        self._scopes = scopes
        self._on_denied = on_denied

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(PUBLIC_GRPC_PREFIXES):
            return handler
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        request_id = metadata.get("x-request-id") or uuid.uuid4().hex
        try:
            principal = await self._verifier.authorize(
                metadata.get("authorization"), self._scopes.for_method(method)
            )
        except AuthError as exc:
            if self._on_denied is not None:
                await self._on_denied(method, exc, request_id)
            return rewrap_handler(handler, _aborting(denial(exc)))
        return rewrap_handler(handler, _binding(principal, request_id))


def _aborting(error: PlatformError) -> Wrapper:
    def wrap(behaviour: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
        if streaming_response:

            async def deny_stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
                await abort(context, error)
                yield  # pragma: no cover - abort raises

            return deny_stream

        async def deny(request: Any, context: ServicerContext) -> Any:
            await abort(context, error)

        return deny

    return wrap


def _binding(principal: Principal, request_id: str) -> Wrapper:
    def wrap(behaviour: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
        if streaming_response:

            async def bound_stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
                _bind(principal, request_id)
                async for item in behaviour(request, context):
                    yield item

            return bound_stream

        async def bound(request: Any, context: ServicerContext) -> Any:
            _bind(principal, request_id)
            return await behaviour(request, context)

        return bound

    return wrap


def _bind(principal: Principal, request_id: str) -> None:
    current_principal.set(principal)
    current_request_id.set(request_id)
    structlog.contextvars.bind_contextvars(request_id=request_id, subject=principal.subject)


def bearer_metadata(token: str, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` (and a request id when given)."""
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
    if request_id:
        metadata += (("x-request-id", request_id),)
    return metadata
