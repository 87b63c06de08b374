"""The concept detector on an error stream: it finds a real change soon, places its
onset in event time, and stays quiet on a stationary stream."""

from __future__ import annotations

import random

import pytest

from services.monitor.detectors import ChangeDetector, DetectorSpec, SampleHistory
from services.monitor.policy import MonitorPolicy
from services.monitor.quality import VersionQuality
from services.monitor.records import Label, LabelledSample, Prediction


def error_stream(seed: int, n: int, change_at: int, before: float = 0.1, after: float = 0.3) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (before if i < change_at else after)) for i in range(n)]


def first_change(detector: ChangeDetector, errors: list[float]) -> tuple[int, object] | None:
    for i, error in enumerate(errors):
        change = detector.update(error, event_time=1000.0 + i)
        if change is not None:
            return i, change
    return None


@pytest.mark.parametrize("seed", range(5))
def test_adwin_detects_an_error_rate_going_from_10_to_30_percent(seed: int) -> None:
    change_at = 3000
    found = first_change(ChangeDetector(DetectorSpec("ADWIN")), error_stream(seed, 8000, change_at))
    assert found is not None
    index, change = found
    # river measured about 124 samples of delay on average; allow for the tail.
    assert change_at < index < change_at + 1000
    assert change.sample_index == index  # type: ignore[attr-defined]
    # The post-change window reaches back to (or before) the change, not after it.
    assert change.onset_time <= 1000.0 + change_at + 32  # type: ignore[attr-defined]
    assert change.statistic > change.reference_statistic  # type: ignore[attr-defined]


def test_adwin_raises_no_alarm_on_100000_stationary_samples() -> None:
    detector = ChangeDetector(DetectorSpec("ADWIN"))
    assert first_change(detector, error_stream(7, 100_000, change_at=100_000)) is None
    assert detector.samples == 100_000


@pytest.mark.parametrize("seed", range(3))
def test_late_samples_after_the_change_do_not_pull_its_onset_back(seed: int) -> None:
    detector = ChangeDetector(DetectorSpec("ADWIN"), history=100_000)
    change_at = 3000
    found = None
    for i, error in enumerate(error_stream(seed, 8000, change_at, before=0.05, after=0.6)):
        # Every tenth sample happened 500 s before its neighbours: taken as it came, the
        # oldest sample after the change is 500 s before it.
        if change := detector.update(error, 10_000.0 + i - (500 if i % 10 == 0 else 0)):
            found = change
            break
    assert found is not None
    assert abs(found.onset_time - (10_000.0 + change_at)) < 20
    assert found.statistic > 0.4 > 0.1 > found.reference_statistic


@pytest.mark.parametrize("apart", [2.0, 5.0, 10.0, 15.0])
def test_a_rise_whose_event_times_overlap_the_samples_before_it_is_still_a_rise(apart: float) -> None:
    # As the console's drift test sends them: 600 samples over 6 s at 5% wrong, then, sent
    # `apart` s later, 1,200 over the 12 s before then at 50% wrong.
    rng = random.Random(1)
    detector = ChangeDetector(DetectorSpec("ADWIN"))
    first = [(994.0 + i * 0.01, float(rng.random() < 0.05)) for i in range(600)]
    second = [(1000.0 + apart - 12 + i * 0.01, float(rng.random() < 0.5)) for i in range(1200)]
    found = next(c for t, e in first + second if (c := detector.update(e, t)))
    assert found.statistic > 0.4 > 0.1 > found.reference_statistic
    assert found.onset_time >= 1000.0 + apart - 12 - 1  # not among the first phase's own


def test_detectors_with_a_warning_zone_place_the_onset_at_the_first_warning() -> None:
    detector = ChangeDetector(DetectorSpec("DDM"))
    change_at = 3000
    changes = [
        detector.update(error, event_time=1000.0 + i)
        for i, error in enumerate(error_stream(5, 8000, change_at, before=0.1, after=0.5))
    ]
    after = [c for c in changes if c is not None and c.sample_index >= change_at]
    assert after, "the change was missed"
    change = after[0]
    # The window starts at the warning just before the alarm, not at the previous alarm
    # (DDM also fires early on while its estimate settles).
    assert change.window_size < 500
    assert change.onset_time == 1000.0 + change.sample_index - change.window_size + 1
    assert change.onset_time >= 1000.0 + change_at - 200


def test_a_regressor_gets_adwin_even_when_a_binary_detector_is_configured() -> None:
    policy = MonitorPolicy(DetectorSpec("DDM"), accuracy_window=100, history=1000)
    quality = VersionQuality("m", 1, "regression", policy)
    assert quality.concept.spec.name == "ADWIN"
    rng = random.Random(1)
    for i in range(3000):
        truth = rng.gauss(0, 1)
        prediction = Prediction(
            f"e{i}", "m", 1, "production", False, "", truth + (0.1 if i < 1500 else 2.0), float(i)
        )
        quality.add(LabelledSample(prediction, Label(f"e{i}", "", truth, float(i), float(i))), now=float(i))
    assert quality.drifts >= 1
    assert quality.accuracy is None
    assert quality.rolling_error.value == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("ADWN", {}, "unknown detector 'ADWN'"),
        ("ADWIN", {"delta_": 0.1}, "bad parameters for ADWIN"),
        ("PageHinkley", {"mode": "sideways"}, "bad parameters for PageHinkley"),
    ],
)
def test_a_detector_spec_is_checked_when_made(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetectorSpec(name, params)


def test_sample_history_keeps_the_newest_samples_in_order() -> None:
    history = SampleHistory(capacity=4)
    for t in range(10):
        history.append(float(t), float(t) * 2)
    times, values = history.last(3)
    assert times.tolist() == [7.0, 8.0, 9.0]
    assert values.tolist() == [14.0, 16.0, 18.0]
    times, _ = history.last(10, skip=1)
    assert times.tolist() == [6.0, 7.0, 8.0]


@pytest.mark.parametrize(("capacity", "appended"), [(100, 257), (300, 1000), (1000, 300)])
def test_sample_history_keeps_the_newest_samples_across_its_blocks(capacity: int, appended: int) -> None:
    history = SampleHistory(capacity)
    for t in range(appended):
        history.append(float(t), -float(t))
        if t == appended // 2:
            history.last(1)  # a read in between writes what is held so far
    kept = min(capacity, appended)
    times, values = history.last(capacity)
    assert len(history) == kept
    assert times.tolist() == [float(t) for t in range(appended - kept, appended)]
    assert values.tolist() == [-t for t in times.tolist()]


@pytest.mark.parametrize(
    ("name", "block"), [("ADWIN", 7), ("ADWIN", 256), ("DDM", 1), ("DDM", 300), ("HDDMA", 50)]
)
def test_values_fed_a_block_at_a_time_find_the_changes_river_finds_one_at_a_time(
    name: str, block: int
) -> None:
    # Two rises, so a block can hold an alarm after the first one's reset.
    errors = error_stream(3, 6000, 2000) + error_stream(4, 4000, 1000, before=0.3, after=0.6)
    river = DetectorSpec(name).build()
    expected = []
    for i, error in enumerate(errors):
        river.update(bool(error))
        if river.drift_detected:
            expected.append(i)
    assert len(expected) >= 2
    one, many = ChangeDetector(DetectorSpec(name)), ChangeDetector(DetectorSpec(name))
    singly = [(i, change) for i, error in enumerate(errors) if (change := one.update(error, float(i)))]
    blocks = [
        (start + i, change)
        for start in range(0, len(errors), block)
        for i, change in many.update_many(
            errors[start : start + block], [float(t) for t in range(start, min(start + block, len(errors)))]
        )
    ]
    assert [i for i, _ in blocks] == expected
    assert blocks == singly
    assert (many.samples, many.state) == (one.samples, one.state)
