"""Progress: when a consumer counts as stuck, and why it says it is."""

from __future__ import annotations

import doctest

from services.common import progress
from services.common.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_documented_examples_hold() -> None:
    assert doctest.testmod(progress).failed == 0


def test_a_consumer_with_no_partition_is_stuck_once_the_stall_has_passed() -> None:
    clock = Clock()
    watched = Progress(stall_seconds=60, clock=clock)
    clock.now = 59
    assert watched.problem() is None, "joining a group takes a while"
    clock.now = 61
    assert watched.problem() == "no partition assigned for 61s"
    watched.polled(assigned=True, lag=0, records=0)
    assert watched.problem() is None


def test_a_long_batch_is_work_but_retrying_one_is_not() -> None:
    clock = Clock()
    watched = Progress(stall_seconds=60, clock=clock)
    watched.polled(assigned=True, lag=3, records=1)
    watched.handling()
    clock.now = 600
    assert watched.problem() is None, "a training job of ten minutes is progress"
    watched.retrying(ConnectionError("mongodb away"))
    clock.now = 661
    assert watched.problem() == "retrying a batch for 61s: ConnectionError('mongodb away')"
    watched.handled()
    assert watched.problem() is None
