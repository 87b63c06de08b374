"""Parts: reverse-order teardown that runs every step, also after a failed start."""

from __future__ import annotations

import asyncio
import doctest

import pytest
from structlog.testing import capture_logs

from services.common import lifecycle
from services.common.lifecycle import Parts


class Part:
    def __init__(self, name: str, said: list[str], *, fail_start: bool = False, fail_stop: bool = False):
        self.name = name
        self.said = said
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise OSError(f"{self.name} cannot bind")
        self.said.append(f"start {self.name}")

    async def stop(self) -> None:
        self.said.append(f"stop {self.name}")
        if self.fail_stop:
            raise ConnectionError(f"{self.name} is away")


def test_the_documented_examples_hold() -> None:
    assert doctest.testmod(lifecycle).failed == 0


async def test_parts_stop_in_reverse_order_and_every_step_runs_when_one_fails() -> None:
    said: list[str] = []
    parts = Parts("svc")
    async with parts.starting():
        await parts.start("client", Part("client", said))
        await parts.start("consumer", Part("consumer", said, fail_stop=True))
        parts.on_stop("flag", lambda: said.append("plain function"))
        await parts.start("server", Part("server", said, fail_stop=True))
    with capture_logs() as logs:
        await parts.stop()
    assert said[3:] == ["stop server", "plain function", "stop consumer", "stop client"]
    failures = [(e["step"], e["error"]) for e in logs if e["event"] == "stop_step_failed"]
    assert failures == [
        ("server", "ConnectionError('server is away')"),
        ("consumer", "ConnectionError('consumer is away')"),
    ]
    said.clear()
    await parts.stop()
    assert said == [], "a second stop has nothing left to do"


async def test_a_start_that_fails_half_way_stops_what_started_then_raises() -> None:
    said: list[str] = []
    parts = Parts("svc")
    with pytest.raises(OSError, match="server cannot bind"):
        async with parts.starting():
            await parts.start("client", Part("client", said))
            await parts.start("server", Part("server", said, fail_start=True))
            await parts.start("never", Part("never", said))
    assert said == ["start client", "stop server", "stop client"]


async def test_a_cancelled_step_does_not_stop_the_rest_unless_the_stop_itself_is_cancelled() -> None:
    said: list[str] = []
    parts = Parts("svc")
    parts.on_stop("client", lambda: said.append("client closed"))

    async def escapes() -> None:
        raise asyncio.CancelledError  # as aiokafka lets a fetch it cancelled escape

    parts.on_stop("listener", escapes)
    with capture_logs() as logs:
        await parts.stop()
    assert said == ["client closed"]
    assert [e["step"] for e in logs if e["event"] == "stop_step_failed"] == ["listener"]
