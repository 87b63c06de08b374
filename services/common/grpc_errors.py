"""The platform error model at the gRPC edges, translated once for every service.

Servers: :class:`ErrorInterceptor` (installed by every ``GrpcServer``) turns a
:class:`~services.common.errors.PlatformError` raised by any handler into its kind's
status code, the message as the details, and the kind and field in trailing metadata,
so servicers just raise. Clients: :func:`platform_error` turns a failed call back into
the same kind (the trailer decides where two kinds share a code), and :func:`translating`
wraps a generated stub so every call raises those instead of ``grpc.RpcError``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any, NoReturn, TypeVar, cast

import grpc

from services.common.errors import FIELD_METADATA, KIND_METADATA, Kind, PlatformError, from_status
from services.common.grpc_handlers import Request, Response, ServicerContext, rewrap_handler
from services.common.values import printable

S = TypeVar("S")


def status_code(kind: Kind) -> grpc.StatusCode:
    """The gRPC status code of ``kind``."""
    return grpc.StatusCode[kind.grpc_code]


def trailing_metadata(error: PlatformError) -> tuple[tuple[str, str], ...]:
    """The trailers that carry ``error``'s kind, and its field when it names one."""
    trailers: tuple[tuple[str, str], ...] = ((KIND_METADATA, error.kind.label),)
    if error.field:
        # Metadata values are printable ASCII; a field may quote what a caller sent.
        trailers += ((FIELD_METADATA, printable(error.field)[:1024]),)
    return trailers


async def abort(context: ServicerContext, error: PlatformError) -> NoReturn:
    """End the call with ``error``'s status, message and trailers."""
    await context.abort(status_code(error.kind), error.message, trailing_metadata=trailing_metadata(error))
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Answers a :class:`PlatformError` escaping any handler (unary or streaming) with its
    status; other exceptions pass through untouched (grpc answers UNKNOWN)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Request, Response] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return rewrap_handler(handler, _translating)


def _translating(behaviour: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
    # A streaming handler is an async generator, or (as the health servicer's Watch) a
    # coroutine that writes with context.write(); the wrapper keeps the handler's form.
    if streaming and inspect.isasyncgenfunction(behaviour):

        async def translating_stream(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in behaviour(request, context):
                    yield item
            except PlatformError as error:
                await abort(context, error)

        return translating_stream

    async def translating_call(request: Any, context: ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except PlatformError as error:
            await abort(context, error)

    return translating_call


def platform_error(exc: grpc.RpcError) -> PlatformError:
    """The platform error a failed call (``grpc.aio`` or blocking) stands for."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    # (key, value) pairs from either kind of call: grpc's own MetadataType, where the stubs
    # declare a blocking call's trailers as records with key and value attributes.
    trailers = cast(
        Iterable[tuple[str, str | bytes]] | None,
        exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None,
    )
    values = {key: value for key, value in trailers or () if isinstance(value, str)}
    return from_status(
        code.name,
        details or code.name,
        kind=values.get(KIND_METADATA, ""),
        field=values.get(FIELD_METADATA, ""),
    )


def translating(stub: S) -> S:
    """``stub`` (a generated ``grpc.aio`` stub) with every call raising :class:`PlatformError`
    (the ``AioRpcError`` as its ``__cause__``) instead of ``AioRpcError``.

    Unary responses are awaited as before; streamed responses are iterated with
    ``async for`` as before, and closing the iteration early cancels the call.
    """
    return cast(S, SimpleNamespace(**{name: _translated(method) for name, method in vars(stub).items()}))


def _translated(method: Any) -> Callable[..., Any]:
    if isinstance(method, grpc.aio.UnaryStreamMultiCallable | grpc.aio.StreamStreamMultiCallable):

        def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return _responses(method(*args, **kwargs))

        return stream

    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except grpc.aio.AioRpcError as exc:
            raise platform_error(exc) from exc

    return call


async def _responses(call: Any) -> AsyncIterator[Any]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as exc:
        raise platform_error(exc) from exc
    finally:
        call.cancel()  # a no-op once the call has finished
