"""Data drift against the training reference: detectors seeded with a sample of the
training data find a shift that happened before the version went live, and the monitor
falls back to the version's own traffic, saying so, when there is no reference."""

from __future__ import annotations

import itertools
import random

import pytest

from services.monitor.drift import DATA, Drift, DriftMonitor
from services.monitor.policy import MonitorPolicy
from services.monitor.records import Prediction
from services.monitor.reference import NONE, TRAINING, UNAVAILABLE, ReferenceLookup

NAMES = tuple(f"f{i}" for i in range(5))
MODEL = "churn"


def prediction(i: int, features: tuple[float, ...], version: int = 1) -> Prediction:
    return Prediction(f"e{i}", MODEL, version, "production", False, "1", 0.0, 1000.0 + i, features, NAMES)


def monitor(**policy: object) -> DriftMonitor:
    counter = itertools.count()
    return DriftMonitor(MonitorPolicy(**policy), new_id=lambda: f"id{next(counter)}")  # type: ignore[arg-type]


def training_reference(seed: int, at: float = 0.0, size: int = 256) -> ReferenceLookup:
    rng = random.Random(seed)
    samples = {name: tuple(rng.gauss(0, 1) for _ in range(size)) for name in NAMES}
    return ReferenceLookup(TRAINING, at, samples=samples, rows=5000)


def live_traffic(
    m: DriftMonitor, n: int, seed: int, shift: dict[str, float], version: int = 1
) -> list[Drift]:
    rng = random.Random(seed)
    drifts = []
    for i in range(n):
        features = tuple(rng.gauss(0, 1) + shift.get(name, 0.0) for name in NAMES)
        drifts += [
            d for d in m.observe(prediction(i, features, version), now=2000.0 + i) if isinstance(d, Drift)
        ]
    return drifts


@pytest.mark.parametrize("seed", range(5))
def test_a_feature_shifted_from_its_training_reference_drifts_and_only_that_one(seed: int) -> None:
    m = monitor()
    m.use_reference(MODEL, 1, training_reference(seed))
    # Shifted by 1 sd from the first live value on: the version never saw it any other way.
    drifts = live_traffic(m, 2000, seed=100 + seed, shift={"f2": 1.0})
    assert drifts, "the shift from training was missed"
    assert {(d.kind, d.feature) for d in drifts} == {(DATA, "f2")}
    first = drifts[0]
    assert first.change.sample_index < 200
    assert first.change.statistic > first.change.reference_statistic + 0.5
    # The change began with the live traffic: its onset is the first live value's time.
    assert first.change.onset_time == 1000.0
    version = m.status(now=0.0)[0]["versions"][0]
    assert version["reference"] == {"status": TRAINING, "detail": "", "features": 5, "rows": 5000}
    assert version["features"]["f2"]["state"] == "drift"
    assert version["features"]["f0"] == {
        "samples": 2000,
        "drifts": 0,
        "state": "stable",
        "reference": "training",
    }


def test_without_a_reference_the_same_traffic_looks_stationary_and_the_status_says_why() -> None:
    m = monitor()
    m.use_reference(MODEL, 1, ReferenceLookup(NONE, 0.0, detail="registered without a reference profile"))
    assert live_traffic(m, 2000, seed=1, shift={"f2": 1.0}) == []
    version = m.status(now=0.0)[0]["versions"][0]
    assert version["reference"]["status"] == NONE
    assert version["reference"]["detail"] == "registered without a reference profile"
    assert version["features"]["f2"]["reference"] == "recent_traffic"


def test_without_a_reference_a_shift_during_live_traffic_is_still_found() -> None:
    m = monitor()
    m.use_reference(MODEL, 1, ReferenceLookup(UNAVAILABLE, 0.0, detail="registry: UNAVAILABLE"))
    before = live_traffic(m, 3000, seed=2, shift={})
    after = live_traffic(m, 3000, seed=3, shift={"f4": 1.0})
    assert before == [] and {d.feature for d in after} == {"f4"}


@pytest.mark.parametrize("seed", range(3))
def test_no_false_alarm_when_live_traffic_matches_the_training_data(seed: int) -> None:
    m = monitor()
    m.use_reference(MODEL, 1, training_reference(seed))
    assert live_traffic(m, 20_000, seed=50 + seed, shift={}) == []


def test_a_reference_that_arrives_late_restarts_the_data_detectors_from_it() -> None:
    m = monitor()
    live_traffic(m, 100, seed=4, shift={"f1": 1.0})
    assert m.status(now=0.0)[0]["versions"][0]["reference"] == {"status": "pending"}
    m.use_reference(MODEL, 1, training_reference(4))
    assert m.status(now=0.0)[0]["versions"][0]["features"] == {}, "detectors start afresh, seeded"
    drifts = live_traffic(m, 1000, seed=5, shift={"f1": 1.0})
    assert {d.feature for d in drifts} == {"f1"}


def test_a_version_going_live_again_is_seeded_again() -> None:
    m = monitor()
    m.use_reference(MODEL, 1, training_reference(6))
    live_traffic(m, 500, seed=6, shift={})
    m.version_live(MODEL, 1)
    drifts = live_traffic(m, 1000, seed=7, shift={"f3": -1.0})
    assert {d.feature for d in drifts} == {"f3"}


def test_when_to_ask_the_registry() -> None:
    m = monitor(reference_retry_seconds=60.0)
    assert m.reference_due(MODEL, 1, now=0.0)
    m.use_reference(MODEL, 1, ReferenceLookup(UNAVAILABLE, at=10.0, detail="registry: UNAVAILABLE"))
    assert not m.reference_due(MODEL, 1, now=69.0)
    assert m.reference_due(MODEL, 1, now=70.0)
    assert m.reference_due(MODEL, 2, now=11.0), "each version is asked about"
    m.use_reference(MODEL, 1, training_reference(0, at=70.0))
    m.use_reference(MODEL, 2, ReferenceLookup(NONE, at=70.0))
    assert not m.reference_due(MODEL, 1, now=1e9) and not m.reference_due(MODEL, 2, now=1e9)
    m.forget(MODEL)
    assert m.reference_due(MODEL, 1, now=1e9), "a model that moved away and back is asked about again"
    off = monitor(training_reference=False)
    assert not off.reference_due(MODEL, 1, now=0.0)
    live_traffic(off, 10, seed=0, shift={})
    assert off.status(now=0.0)[0]["versions"][0]["reference"] == {"status": "off"}
