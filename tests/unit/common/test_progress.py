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


def test_a_consumer_the_broker_does_not_answer_is_stuck_though_its_last_lag_was_zero() -> None:
    clock = Clock()
    watched = Progress(stall_seconds=60, clock=clock)
    watched.polled(assigned=True, lag=0, records=0)
    for clock.now in range(1, 62):  # a network cut: every look finds the lag unknown
        watched.polled(assigned=True, lag=None, records=0)
    assert watched.problem() == "no answer from the broker for 61s"
    watched.polled(assigned=True, lag=40, records=0)  # the link is back: the broker answers
    assert watched.problem() == "40 records behind and none consumed for 61s"
    watched.polled(assigned=True, lag=None, records=40)
    assert watched.problem() is None
    watched.handling()
    clock.now = 600
    assert watched.problem() is None, "a long batch hears nothing from the broker, and is work"


def test_a_reader_for_which_silence_is_not_stuck_stays_ready_through_a_cut() -> None:
    clock = Clock()
    watched = Progress(stall_seconds=60, clock=clock, silence_is_stuck=False)
    watched.polled(assigned=True, lag=0, records=0)
    for clock.now in range(1, 62):
        watched.polled(assigned=True, lag=None, records=0)
    assert watched.problem() is None
