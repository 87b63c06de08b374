"""What every platform gRPC client shares: a traced channel with size limits (TLS when
given a :class:`~services.common.tls.ClientTls`), the bearer token on each call, platform errors instead of gRPC's, and ``async with`` to close the
channel.

A failed call raises the :class:`~services.common.errors.PlatformError` its status stands
for (``NotFound``, ``Conflict``, ``Unavailable`` ...; the ``grpc.aio.AioRpcError`` as its
``__cause__``), so callers catch kinds, never status codes."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import grpc

from services.common import tracing
from services.common.auth import bearer_metadata
from services.common.grpc_errors import translating
from services.common.tls import ClientTls

S = TypeVar("S")


MAX_RECONNECT_BACKOFF_MS = 1000
"""Longest wait between a channel's attempts to reconnect to a peer that went away. gRPC's
default grows to 120 s: a client whose server restarted in 5 s kept failing UNAVAILABLE for
seconds more, and after a minute's outage for about a minute more, without trying it."""


def open_channel(
    address: str, max_message_bytes: int = 32 * 1024 * 1024, *, tls: ClientTls | None = None
) -> grpc.aio.Channel:
    """A channel to ``address`` that propagates the trace context and reconnects within
    :data:`MAX_RECONNECT_BACKOFF_MS` of its peer coming back: TLS with ``tls``, plaintext
    without (where TLS terminates at a mesh or a load balancer)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]
    if tls is not None:
        return grpc.aio.secure_channel(
            address, tls.grpc_credentials(), options=options, interceptors=tracing.client_interceptors()
        )
    return grpc.aio.insecure_channel(address, options=options, interceptors=tracing.client_interceptors())


class GrpcClient:
    """Base of the typed clients: one channel, a token provider called before every call.

    Subclasses make their stubs with :meth:`_stub`, whose calls raise platform errors.
    """

    def __init__(
        self, address: str, token: Callable[[], str], *, max_message_bytes: int, tls: ClientTls | None = None
    ):
        self._channel = open_channel(address, max_message_bytes, tls=tls)
        self._token = token

    def _stub(self, stub_type: Callable[[grpc.aio.Channel], S]) -> S:
        """A ``stub_type`` on this client's channel, raising platform errors."""
        return translating(stub_type(self._channel))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def _metadata(self, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self._token(), request_id)
