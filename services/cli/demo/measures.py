"""The demo's figures, measured from what it sent and what serving answered, and the verdict.

No I/O and no clock: the scenario feeds answers and times in, reads the figures out.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from services.cli.demo.report import DemoReport
from services.cli.demo.stream import Sample


@dataclass
class Accuracy:
    """Running accuracy of served predictions against the true labels.

    >>> accuracy = Accuracy()
    >>> accuracy.value
    nan
    >>> accuracy.add("1", 1); accuracy.add("0", 1)
    >>> accuracy.value, accuracy.total
    (0.5, 2)
    """

    correct: int = 0
    total: int = 0

    def add(self, predicted: str, actual: int) -> None:
        self.total += 1
        self.correct += int(predicted == str(actual))

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass
class LiveAccuracy:
    """Served answers sorted by when they came: before the drift, after it from the first
    version, and after it from the version swapped in.

    >>> from services.cli.demo.stream import DriftingStream
    >>> live = LiveAccuracy(first_version=1)
    >>> before, after = DriftingStream("r", drift_at=1, seed=0).take(2)
    >>> live.add(before, str(before.label), 1), live.add(after, "x", 1), live.add(after, str(after.label), 2)
    (False, False, True)
    >>> live.before.value, live.after_drift_old.value, live.after_swap.value, live.new_version
    (1.0, 0.0, 1.0, 2)
    """

    first_version: int
    before: Accuracy = field(default_factory=Accuracy)
    after_drift_old: Accuracy = field(default_factory=Accuracy)
    after_swap: Accuracy = field(default_factory=Accuracy)
    new_version: int = 0
    """The first other version that answered a drifted sample (0 until one does)."""

    def add(self, sample: Sample, predicted: str, version: int) -> bool:
        """One answer; True when it is the first from the swapped-in version."""
        if not sample.drifted:
            self.before.add(predicted, sample.label)
            return False
        if version == self.first_version:
            self.after_drift_old.add(predicted, sample.label)
            return False
        swapped = self.new_version == 0
        if swapped:
            self.new_version = version
        self.after_swap.add(predicted, sample.label)
        return swapped


class SentEvents:
    """When each sample's event was sent, in sending order: where in the stream a moment falls.

    >>> sent = SentEvents()
    >>> for index in range(10):
    ...     sent.add(at=100.0 + index, index=index)
    >>> sent.samples_between(true_onset=4, located=106.5)
    3
    >>> sent.samples_between(true_onset=4, located=101.0)
    -3
    """

    def __init__(self) -> None:
        self._times: list[float] = []
        self._indexes: list[int] = []

    def __len__(self) -> int:
        """Events sent."""
        return len(self._times)

    def add(self, at: float, index: int) -> None:
        """Sample ``index``'s event was sent at ``at`` (epoch seconds, not before the last one)."""
        self._times.append(at)
        self._indexes.append(index)

    def samples_between(self, true_onset: int, located: float) -> int:
        """Events sent between the first event of sample ``true_onset`` or later and the moment
        ``located``: positive when ``located`` is after the true onset, negative before."""
        located_at = bisect.bisect_left(self._times, located)
        true_at = next(
            (i for i, index in enumerate(self._indexes) if index >= true_onset), len(self._indexes)
        )
        return located_at - true_at


def judge(report: DemoReport, production_version: int, min_accuracy_gain: float) -> list[str]:
    """Why the loop did not close (empty when it did): a drift detected, exactly one retrain,
    a new version in production that does ``min_accuracy_gain`` better than the drifted old one,
    and no failed request. A verdict already on the report (a timeout) comes first.

    >>> closed = DemoReport(run_id="r", first_version=1, new_version=2, retrain_requests=1,
    ...     drift_detected_at_sample=3600, accuracy_after_drift_old_model=0.5, accuracy_after_swap=0.9)
    >>> judge(closed, production_version=2, min_accuracy_gain=0.15)
    []
    >>> judge(closed, production_version=2, min_accuracy_gain=0.5)
    ["accuracy after the swap 0.9 is not 0.5 above the drifted old model's 0.5"]
    """
    problems = []
    if report.drift_detected_at_sample < 0:
        problems.append("no drift detected")
    if report.retrain_requests != 1:
        problems.append(f"{report.retrain_requests} retrain requests, expected exactly 1")
    if not report.new_version or report.new_version == report.first_version:
        problems.append("no new version served")
    elif production_version != report.new_version:
        problems.append(f"production is version {production_version}, not {report.new_version}")
    gain = report.accuracy_after_swap - report.accuracy_after_drift_old_model
    if not gain >= min_accuracy_gain:
        problems.append(
            f"accuracy after the swap {report.accuracy_after_swap} is not {min_accuracy_gain} "
            f"above the drifted old model's {report.accuracy_after_drift_old_model}"
        )
    if report.failed_requests:
        problems.append(f"{report.failed_requests} prediction requests failed")
    if report.verdict:
        problems.insert(0, report.verdict)
    return problems
