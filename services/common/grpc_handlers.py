"""What gRPC servicers and the server interceptors that wrap a method's behaviour (auth,
errors) share: the context's type, and rewrapping a method handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message

Request = TypeVar("Request")
Response = TypeVar("Response")

ServicerContext: TypeAlias = grpc.aio.ServicerContext[Message, Message]
"""What a servicer method receives beside its request. Its messages are typed as any
protobuf message: methods take requests as arguments and answer by returning or yielding,
never through the context's ``read`` and ``write``."""

Behaviour = Callable[..., Any]
Wrapper = Callable[[Behaviour, bool], Behaviour]
"""Takes a method's behaviour and whether it streams responses; returns the wrapped one."""


def rewrap_handler(
    handler: grpc.RpcMethodHandler[Request, Response], wrap: Wrapper
) -> grpc.RpcMethodHandler[Request, Response]:
    """The same method handler with its behaviour passed through ``wrap``, whatever its arity."""
    deserializer, serializer = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), deserializer, serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True), deserializer, serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False), deserializer, serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, True), deserializer, serializer
        )
    raise ValueError(f"{handler!r} has no behaviour to wrap")
