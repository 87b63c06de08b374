"""Bearer tokens with scopes, checked the same way on gRPC and HTTP.

Tokens are JWTs signed with HS256 under ``MLOPS_AUTH_SECRET``. A token names its
subject and its scopes (space-separated, as OAuth 2 does); ``admin`` implies every
other scope. There is no default secret and no default token: the local stack
generates both, docker-compose refuses to start without them.
"""

from __future__ import annotations

import contextvars
import enum
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import grpc
import jwt
import structlog

from services.common.errors import PermissionDenied, PlatformError, Unauthenticated
from services.common.grpc_errors import abort
from services.common.grpc_handlers import Request, Response, ServicerContext, Wrapper, rewrap_handler

ISSUER = "mlops"
ALGORITHM = "HS256"
PUBLIC_GRPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Scope(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    PROMOTE = "promote"
    APPROVE = "approve"
    ADMIN = "admin"
    PREDICT = "predict"
    INGEST = "ingest"


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    subject: str
    scopes: frozenset[Scope]
    token_id: str = ""
    expires_at: float | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


class AuthError(Exception):
    """A request without a usable token (401) or without the scope it needs (403)."""

    def __init__(self, message: str, *, forbidden: bool = False, principal: Principal | None = None):
        super().__init__(message)
        self.forbidden = forbidden
        self.principal = principal


def denial(exc: AuthError) -> PlatformError:
    """The platform error a refused token stands for: unauthenticated, or denied the scope."""
    return PermissionDenied(str(exc)) if exc.forbidden else Unauthenticated(str(exc))


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes from names; an unknown name is an error, never silently dropped."""
    scopes = set()
    for value in values:
        try:
            scopes.add(Scope(value.strip().lower()))
        except ValueError:
            raise ValueError(f"unknown scope {value!r}; known: {', '.join(s.value for s in Scope)}") from None
    return frozenset(scopes)


def mint_token(
    secret: str, subject: str, scopes: Iterable[Scope | str], ttl_seconds: float | None = None
) -> str:
    """Sign a token for ``subject`` with ``scopes``; without ``ttl_seconds`` it does not expire."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject,
        "scope": " ".join(sorted(Scope(s).value for s in scopes)),
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    if ttl_seconds is not None:
        claims["exp"] = now + int(ttl_seconds)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenVerifier:
    """Verifies bearer tokens; a verified token is cached until it expires."""

    def __init__(self, secret: str, cache_size: int = 4096):
        self._secret = secret
        self._decode = lru_cache(maxsize=cache_size)(self._decode_uncached)

    def _decode_uncached(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "iss", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        try:
            scopes = parse_scopes(str(claims.get("scope", "")).split())
        except ValueError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        return Principal(
            subject=str(claims["sub"]),
            scopes=scopes,
            token_id=str(claims.get("jti", "")),
            expires_at=float(claims["exp"]) if "exp" in claims else None,
        )

    def verify(self, authorization: str | None) -> Principal:
        """The principal behind an ``Authorization: Bearer <token>`` value."""
        if not authorization:
            raise AuthError("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("authorization must be 'Bearer <token>'")
        principal = self._decode(token.strip())
        if principal.expires_at is not None and principal.expires_at < time.time():
            raise AuthError("token expired")
        return principal

    def authorize(self, authorization: str | None, scope: Scope) -> Principal:
        principal = self.verify(authorization)
        if not principal.allows(scope):
            raise AuthError(
                f"token for {principal.subject!r} lacks scope {scope.value!r}",
                forbidden=True,
                principal=principal,
            )
        return principal


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
    """Checks the bearer token and scope of every call except health and reflection.

    The verified principal and the request id (``x-request-id`` metadata, or a new
    one) are available to the handler through :data:`current_principal` and
    :data:`current_request_id`, and bound into the log context.
    """

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
            principal = self._verifier.authorize(
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


class ServiceCredentials:
    """The token a service presents when it calls another: subject ``service:<name>``,
    only the scopes it needs, short-lived and re-minted before it expires."""

    def __init__(self, secret: str, service: str, scopes: Iterable[Scope], ttl_seconds: float = 3600):
        self._secret = secret
        self._subject = f"service:{service}"
        self._scopes = frozenset(scopes)
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_token(self._secret, self._subject, self._scopes, ttl_seconds=self._ttl)
            self._renew_at = now + self._ttl * 0.8
        return self._token


def bearer_metadata(token: str, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying ``token`` (and a request id when given)."""
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
    if request_id:
        metadata += (("x-request-id", request_id),)
    return metadata
