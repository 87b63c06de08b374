"""Waiting on state that is only reachable by asking for it (an API, a database)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 20.0, interval: float = 0.1
) -> T:
    """Ask ``probe`` every ``interval`` seconds until ``done`` holds for its answer; that answer."""
    async with asyncio.timeout(within):
        while True:
            value = await probe()
            if done(value):
                return value
            await asyncio.sleep(interval)


async def wait_for(condition: Callable[[], object], within: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` (sync or async) until it is truthy; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)
