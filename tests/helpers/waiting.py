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
