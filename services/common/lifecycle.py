"""How every service starts and stops its parts: one :class:`Parts` per app.

A service is a handful of parts (a database client, a producer, consumers, servers) that
start in order, each needing the ones before it. :class:`Parts` keeps them on an
:class:`contextlib.AsyncExitStack` as they start, so that

- stopping runs in reverse order: servers stop taking calls before the consumers and
  clients they use go away;
- every step runs even when one before it fails (a broker that is away must not keep a
  port or a channel open); each failure is logged once, as ``stop_step_failed`` with the
  step's name, and stopping goes on;
- a start that fails half-way stops what had started, the part that failed included
  (its start may have opened a connection before failing), then raises: nothing is left
  running behind an app that never became ready. So a part's ``stop()`` must be safe
  whatever its ``start()`` reached, as the platform's servers, consumers and clients are.

>>> import asyncio
>>> from contextlib import asynccontextmanager
>>> said = []
>>> class Server:
...     async def start(self): said.append("server up")
...     async def stop(self): said.append("server down")
>>> @asynccontextmanager
... async def client():
...     said.append("client open")
...     yield "client"
...     said.append("client closed")
>>> async def main():
...     parts = Parts("demo")
...     async with parts.starting():
...         await parts.enter("client", client())
...         await parts.start("server", Server())
...     await parts.stop()
>>> asyncio.run(main())
>>> said
['client open', 'server up', 'server down', 'client closed']

A part that fails to start leaves the ones before it stopped:

>>> said.clear()
>>> class Broken:
...     async def start(self): raise OSError("port taken")
...     async def stop(self): said.append("half-started server stopped")
>>> async def broken():
...     parts = Parts("demo")
...     async with parts.starting():
...         await parts.enter("client", client())
...         await parts.start("server", Broken())
>>> asyncio.run(broken())
Traceback (most recent call last):
...
OSError: port taken
>>> said
['client open', 'half-started server stopped', 'client closed']
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol, TypeVar

from services.common.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
StopStep = Callable[[], Awaitable[object] | None]
"""Undoes what a part did: a coroutine function, or a plain function for what needs no await."""


class Startable(Protocol):
    """A part with ``await start()`` and ``await stop()`` (servers, consumers, clients)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


P = TypeVar("P", bound=Startable)


class Parts:
    """The parts one service has started, to be stopped in reverse order.

    Parameters
    ----------
    service
        Named in the log lines of failed steps.
    """

    def __init__(self, service: str):
        self._service = service
        self._stack = AsyncExitStack()

    @asynccontextmanager
    async def starting(self) -> AsyncIterator[Parts]:
        """Start parts inside this block; if it raises, what started is stopped, then the
        error goes on."""
        try:
            yield self
        except BaseException:
            await self.stop()
            raise

    async def start(self, name: str, part: P) -> P:
        """``await part.start()``, with ``part.stop`` as the step that undoes it (registered
        first, so a start that fails half-way is undone too)."""
        self.on_stop(name, part.stop)
        await part.start()
        return part

    async def enter(self, name: str, part: AbstractAsyncContextManager[T]) -> T:
        """Enter an async context manager; its exit is the step that undoes it."""
        value = await part.__aenter__()
        self.on_stop(name, lambda: part.__aexit__(None, None, None))
        return value

    def on_stop(self, name: str, step: StopStep) -> None:
        """Run ``step`` when stopping, before the steps of whatever started earlier."""
        self._stack.push_async_callback(self._run_step, name, step)

    async def stop(self) -> None:
        """Run every step, last registered first. Failures are logged, never raised; a
        second call finds nothing left to do."""
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

    async def _run_step(self, name: str, step: StopStep) -> None:
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            # A stop step of a library that lets its own internal cancellation escape: ours
            # to pass on only when this task itself is being cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("stop_step_failed", service=self._service, step=name, error="cancelled")
        except Exception as exc:
            log.warning("stop_step_failed", service=self._service, step=name, error=repr(exc))


async def cancel(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` and wait until it has finished (a background loop's stop step)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run_until(app: Startable, stop: asyncio.Event, started: Callable[[], None] | None = None) -> None:
    """Start ``app``, call ``started``, wait for ``stop``, stop it (the ``run`` of every service)."""
    await app.start()
    if started is not None:
        started()
    try:
        await stop.wait()
    finally:
        await app.stop()
