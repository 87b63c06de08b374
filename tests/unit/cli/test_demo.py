"""The demo's figures and verdict, from answers and times fed by hand: live accuracy before
the drift, after it on the old version and after the swap; how far the located onset is
from the true one; and every way the loop can fail to close."""

from __future__ import annotations

import json
import math

import pytest

from services.cli.demo.measures import LiveAccuracy, SentEvents, judge
from services.cli.demo.report import DemoReport, summary_table
from services.cli.demo.stream import DriftingStream


def test_answers_are_sorted_by_drift_and_version_and_the_swap_is_seen_once() -> None:
    stream = DriftingStream("run", drift_at=10, seed=3)
    samples = stream.take(30)
    live = LiveAccuracy(first_version=4)
    right = [str(s.label) for s in samples]
    wrong = [str(1 - s.label) for s in samples]
    swaps = []
    # Before the drift: 8 of 10 right. After it, version 4 (the old one) is right 5 times in 10.
    for i, s in enumerate(samples[:10]):
        swaps.append(live.add(s, right[i] if i < 8 else wrong[i], 4))
    for i, s in enumerate(samples[10:20], start=10):
        swaps.append(live.add(s, right[i] if i % 2 else wrong[i], 4))
    # Then version 5 answers, right 9 times in 10, with one late answer of version 4 among them.
    for i, s in enumerate(samples[20:30], start=20):
        if i == 25:
            swaps.append(live.add(s, wrong[i], 4))
        else:
            swaps.append(live.add(s, right[i] if i != 21 else wrong[i], 5))

    assert swaps.count(True) == 1 and swaps.index(True) == 20
    assert live.new_version == 5
    assert (live.before.correct, live.before.total) == (8, 10)
    assert (live.after_drift_old.correct, live.after_drift_old.total) == (5, 11)
    assert (live.after_swap.correct, live.after_swap.total) == (8, 9)
    assert live.after_swap.value == pytest.approx(8 / 9)


def test_nothing_answered_after_the_swap_is_not_a_measured_accuracy() -> None:
    live = LiveAccuracy(first_version=1)
    assert math.isnan(live.after_swap.value) and live.new_version == 0


@pytest.mark.parametrize(
    ("located", "expected"),
    [
        (1000.0, -5),  # before anything of the new concept was sent
        (1004.5, 0),  # between the last old event and the first new one
        (1005.0, 0),  # exactly at the first event of the new concept
        (1005.2, 1),
        (1009.0, 4),
        (2000.0, 5),  # after everything sent
    ],
)
def test_samples_between_the_true_onset_and_the_located_one(located: float, expected: int) -> None:
    sent = SentEvents()
    # Two waves of five: samples 0-4 at 1000..1004, then 5-9 (the new concept) at 1005..1009.
    for index in range(10):
        sent.add(at=1000.0 + index, index=index)
    assert sent.samples_between(true_onset=5, located=located) == expected


def test_samples_are_counted_in_sending_order_not_by_index() -> None:
    sent = SentEvents()
    # Failed requests send no event: sample 2's and 3's events are missing.
    for at, index in [(1.0, 0), (2.0, 1), (3.0, 4), (4.0, 5)]:
        sent.add(at=at, index=index)
    assert sent.samples_between(true_onset=3, located=3.5) == 1
    # A true onset past everything sent: counted from the end.
    assert sent.samples_between(true_onset=9, located=1.5) == -3


def closed_report(**changes: object) -> DemoReport:
    report = DemoReport(
        run_id="r",
        model_name="demo-classifier-r",
        first_version=1,
        new_version=2,
        retrain_requests=1,
        drift_detected_at_sample=3620,
        accuracy_after_drift_old_model=0.5,
        accuracy_after_swap=0.93,
    )
    for name, value in changes.items():
        setattr(report, name, value)
    return report


def test_a_loop_that_closed_has_no_problem() -> None:
    assert judge(closed_report(), production_version=2, min_accuracy_gain=0.15) == []


@pytest.mark.parametrize(
    ("changes", "production", "problem"),
    [
        ({"drift_detected_at_sample": -1}, 2, "no drift detected"),
        ({"retrain_requests": 0}, 2, "0 retrain requests, expected exactly 1"),
        ({"retrain_requests": 2}, 2, "2 retrain requests, expected exactly 1"),
        ({"new_version": 0}, 1, "no new version served"),
        ({"new_version": 1}, 1, "no new version served"),
        ({}, 1, "production is version 1, not 2"),
        (
            {"accuracy_after_swap": 0.6},
            2,
            "accuracy after the swap 0.6 is not 0.15 above the drifted old model's 0.5",
        ),
        ({"accuracy_after_swap": math.nan}, 2, "accuracy after the swap nan is not 0.15 above"),
        ({"failed_requests": 3}, 2, "3 prediction requests failed"),
    ],
)
def test_each_way_the_loop_does_not_close_is_named(
    changes: dict[str, object], production: int, problem: str
) -> None:
    problems = judge(closed_report(**changes), production_version=production, min_accuracy_gain=0.15)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_timeout_comes_first_with_what_it_left_undone() -> None:
    report = closed_report(verdict="the loop did not close within 150s of the drift", retrain_requests=0)
    assert judge(report, production_version=1, min_accuracy_gain=0.15) == [
        "the loop did not close within 150s of the drift",
        "0 retrain requests, expected exactly 1",
        "production is version 1, not 2",
    ]


def test_the_report_names_the_model_and_writes_unmeasured_figures_as_null() -> None:
    report = closed_report(monitor_hold="cooldown until 2026-11-30 10:00:00 UTC: ...")
    data = json.loads(report.to_json())
    assert data["model_name"] == "demo-classifier-r"
    assert data["accuracy_before_drift"] is None and data["accuracy_after_swap"] == 0.93
    rows = {
        row[0]: row[1]
        for row in zip(*(column.cells for column in summary_table(report).columns), strict=True)
    }
    assert rows["model"] == "demo-classifier-r"
    assert rows["the monitor held the retrain back"].startswith("cooldown until")
