"""The monitor's timeline: bounded, sampled from the status, told of every decision, and
forgetting what this process no longer watches."""

from __future__ import annotations

import doctest
import random

import pytest

from services.monitor import timeline as timeline_module
from services.monitor.detectors import Change
from services.monitor.drift import Drift, DriftMonitor, MonitorPolicy
from services.monitor.records import Label, LabelledSample, Prediction
from services.monitor.retrain import RetrainRequest
from services.monitor.timeline import Timeline


def status(*versions: tuple[int, float], live: int = 1) -> list[dict[str, object]]:
    return [
        {
            "model": "churn",
            "live_version": live,
            "versions": [
                {"version": v, "accuracy": a, "mean_absolute_error": None, "predictions": 5, "labelled": 4}
                for v, a in versions
            ],
        }
    ]


def test_points_are_bounded_per_version_and_oldest_first() -> None:
    timeline = Timeline(points=5, events=3)
    for second in range(12):
        timeline.sample(status((1, second / 100), (2, 0.5)), now=float(second))
    view = timeline.model("churn")
    assert view is not None
    assert [p["at"] for p in view["versions"]["1"]] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert [p["accuracy"] for p in view["versions"]["1"]][-1] == 0.11
    assert len(view["versions"]["2"]) == 5


def test_live_changes_and_dropped_versions_are_recorded() -> None:
    timeline = Timeline(points=10, events=10)
    timeline.sample(status((1, 0.9)), now=1.0)
    timeline.sample(status((1, 0.9), (2, 0.95), live=2), now=2.0)
    timeline.sample(status((2, 0.95), live=2), now=3.0)  # v1 no longer watched
    view = timeline.model("churn")
    assert view is not None
    assert view["live_changes"] == [
        {"at": 1.0, "version": 1, "previous_version": None},
        {"at": 2.0, "version": 2, "previous_version": 1},
    ]
    assert list(view["versions"]) == ["2"]


def test_decisions_are_kept_newest_last_and_bounded() -> None:
    timeline = Timeline(points=10, events=2)
    change = Change(
        sample_index=1200, window_size=150, statistic=0.3, reference_statistic=0.1, onset_time=50.0
    )
    for i in range(3):
        timeline.record(Drift(f"d{i}", "churn", 1, "concept", "ADWIN", "", change, detected_at=60.0 + i))
    timeline.record(RetrainRequest("churn", 1, "drift:churn:e1", "d0", onset_time=50.0, requested_at=70.0))
    view = timeline.model("churn")
    assert view is not None
    assert [d["id"] for d in view["drifts"]] == ["d1", "d2"]
    assert view["drifts"][0]["statistic"] == 0.3 and view["drifts"][0]["onset_time"] == 50.0
    assert view["retrains"] == [
        {
            "parent_version": 1,
            "idempotency_key": "drift:churn:e1",
            "drift_event_id": "d0",
            "onset_time": 50.0,
            "requested_at": 70.0,
        }
    ]


def test_a_model_another_process_took_over_is_forgotten() -> None:
    timeline = Timeline(points=10, events=10)
    timeline.sample(status((1, 0.9)), now=1.0)
    assert timeline.model("churn") is not None
    timeline.sample([], now=2.0)
    assert timeline.model("churn") is None and timeline.model("other") is None


def test_it_draws_what_the_drift_monitor_decides() -> None:
    """Fed by the real monitor: the drift event it decides is on the timeline at its time."""
    monitor = DriftMonitor(MonitorPolicy(cooldown_seconds=3600, retrain_min_samples=100))
    timeline = Timeline(points=100, events=10)
    rng = random.Random(7)
    for i in range(4000):
        wrong = rng.random() < (0.05 if i < 2000 else 0.4)
        prediction = Prediction(f"e{i}", "churn", 1, "production", False, "1", 0.0, float(i))
        sample = LabelledSample(
            prediction, Label(f"e{i}", "0" if wrong else "1", None, float(i), float(i) + 1)
        )
        for decision in monitor.observe_labelled(sample, now=float(i)):
            timeline.record(decision)
        if i % 500 == 0:
            timeline.sample(monitor.status(float(i)), now=float(i))
    timeline.sample(monitor.status(4000.0), now=4000.0)
    view = timeline.model("churn")
    assert view is not None
    first = view["drifts"][0]
    assert first["kind"] == "concept" and 2000 < first["detected_at"] < 2500
    assert view["retrains"] and view["retrains"][0]["parent_version"] == 1
    accuracies = [p["accuracy"] for p in view["versions"]["1"]]
    assert accuracies[1] > 0.9 > accuracies[-1]


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        Timeline(points=0, events=1)


def test_docstring_examples() -> None:
    result = doctest.testmod(timeline_module)
    assert result.attempted > 0 and result.failed == 0
