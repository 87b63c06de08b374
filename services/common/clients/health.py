"""The standard gRPC health protocol's stub, typed.

grpcio-health-checking's generated ``HealthStub`` is untyped, and its typeshed stub
declares none of its methods: :func:`health_stub` gives the same stub with its calls'
request and response types, for a blocking or a ``grpc.aio`` channel.
"""

from __future__ import annotations

from typing import Protocol, cast, overload

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class AsyncHealthStub(Protocol):
    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.aio.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


class HealthStub(Protocol):
    Check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


@overload
def health_stub(channel: grpc.aio.Channel) -> AsyncHealthStub: ...
@overload
def health_stub(channel: grpc.Channel) -> HealthStub: ...
def health_stub(channel: grpc.aio.Channel | grpc.Channel) -> AsyncHealthStub | HealthStub:
    """``grpc.health.v1.Health``'s stub on ``channel``."""
    return cast(AsyncHealthStub | HealthStub, health_pb2_grpc.HealthStub(channel))
