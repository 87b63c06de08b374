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


def open_channel(
    address: str, max_message_bytes: int = 32 * 1024 * 1024, *, tls: ClientTls | None = None
) -> grpc.aio.Channel:
    """A channel to ``address`` that propagates the trace context: TLS with ``tls``,
    plaintext without (where TLS terminates at a mesh or a load balancer)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
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
