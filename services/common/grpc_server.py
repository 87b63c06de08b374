"""A gRPC server with what every service's server needs: the standard health protocol,
reflection, authentication, platform errors answered with their status, message-size
limits, TLS when the settings ask for it, and an orderly shutdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.grpc_errors import ErrorInterceptor
from services.common.logging import get_logger
from services.common.tls import ServerTls
from services.common.tracing import server_interceptor

log = get_logger(__name__)


class GrpcServer:
    """Owns one ``grpc.aio`` server: add servicers, :meth:`start`, :meth:`stop`.

    Health reports SERVING for the server ("") and each registered service once
    started, and NOT_SERVING from the moment :meth:`stop` begins, so load balancers
    drain a replica before it goes away. A handler that raises a
    :class:`~services.common.errors.PlatformError` is answered with its kind's status
    (:class:`~services.common.grpc_errors.ErrorInterceptor`), inside the trace's span and
    outside ``interceptors`` (authentication), so their refusals are answered the same way.
    With ``tls`` the port accepts TLS only (see :mod:`services.common.tls`).
    """

    def __init__(
        self,
        address: str,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_message_bytes: int = 16 * 1024 * 1024,
        options: Sequence[tuple[str, Any]] = (),
        tls: ServerTls | None = None,
        reuse_port: bool = False,
    ):
        self._address = address
        self._tls = tls
        self._server = grpc.aio.server(
            interceptors=[server_interceptor(), ErrorInterceptor(), *interceptors],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # Off unless asked: a second server on a taken port must fail, not share it.
                # Worker processes of one replica ask, to share their port (SO_REUSEPORT).
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                *options,
            ],
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._service_names: list[str] = []
        self.port = 0
        self._serving: bool | None = None

    def add_service(
        self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        """Register ``servicer`` with its generated ``add_*_to_server`` function."""
        register(servicer, self._server)
        self._service_names.append(full_name)

    async def start(self) -> None:
        if self._tls is not None:
            self.port = self._server.add_secure_port(self._address, self._tls.grpc_credentials())
        else:
            self.port = self._server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self._address}")
        names = [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self._server)
        await self._server.start()
        await self.set_serving(True)
        log.info(
            "grpc_started",
            address=self._address,
            port=self.port,
            tls=self._tls is not None,
            services=self._service_names,
        )

    async def set_serving(self, serving: bool) -> None:
        """Tell the health protocol; a status it already says is not sent again (watchers
        are told of changes only)."""
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._service_names]:
            await self._health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        log.info("grpc_stopped", address=self._address)
