"""Live quality of one model version: rolling accuracy (or error) and concept drift."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from services.monitor.detectors import Change, ChangeDetector, DetectorSpec
from services.monitor.records import CLASSIFICATION, LabelledSample


class RollingMean:
    """Mean of the last ``size`` values.

    >>> mean = RollingMean(3)
    >>> for value in (1.0, 0.0, 0.0, 0.0):
    ...     mean.add(value)
    >>> mean.value, mean.count
    (0.0, 3)
    """

    def __init__(self, size: int):
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._sum = 0.0
        self._since_exact = 0

    @property
    def count(self) -> int:
        return len(self._values)

    @property
    def value(self) -> float | None:
        return self._sum / len(self._values) if self._values else None

    def add(self, value: float) -> None:
        if len(self._values) == self._values.maxlen:
            self._sum -= self._values[0]
        self._values.append(value)
        self._sum += value
        self._since_exact += 1
        if self._since_exact >= 10 * (self._values.maxlen or 1):
            # Re-add from scratch now and then so float rounding cannot accumulate.
            self._sum = float(sum(self._values))
            self._since_exact = 0


@dataclass(frozen=True)
class DetectedChange:
    change: Change
    detected_at: float


class VersionQuality:
    """What the monitor knows about one model version's answers.

    Parameters
    ----------
    model, version
        The version watched.
    task
        ``classification`` (errors are 0/1) or ``regression`` (absolute errors).
    spec
        The concept detector on the error stream. Binary detectors cannot take absolute
        errors, so a regressor gets ADWIN instead.
    window
        Labelled samples in the rolling accuracy or mean absolute error.
    history
        Samples each detector remembers to place an onset.
    """

    def __init__(self, model: str, version: int, task: str, spec: DetectorSpec, window: int, history: int):
        self.model = model
        self.version = version
        self.task = task
        if task != CLASSIFICATION and spec.binary:
            spec = DetectorSpec("ADWIN")
        self._spec = spec
        self._history = history
        self._window = window
        self.predictions = 0
        self.labelled = 0
        self.last_seen = 0.0
        self.drifts = 0
        self.last_drift: DetectedChange | None = None
        self.reset()

    def reset(self) -> None:
        """Start the detector and the rolling figures afresh (the version went live again)."""
        self.concept = ChangeDetector(self._spec, self._history)
        self.rolling_error = RollingMean(self._window)
        self.last_drift = None

    def observe(self, now: float) -> None:
        self.predictions += 1
        self.last_seen = now

    def add(self, sample: LabelledSample, now: float) -> Change | None:
        """One labelled sample; the change it reveals, if any."""
        error = sample.error
        self.labelled += 1
        self.last_seen = now
        self.rolling_error.add(error)
        change = self.concept.update(error, sample.event_time)
        if change is not None:
            self.drifts += 1
            self.last_drift = DetectedChange(change, now)
        return change

    @property
    def accuracy(self) -> float | None:
        """Rolling accuracy for classifiers (None for regressors or before any label)."""
        error = self.rolling_error.value
        if self.task != CLASSIFICATION or error is None:
            return None
        return 1.0 - error

    def snapshot(self) -> dict[str, Any]:
        last = self.last_drift
        return {
            "version": self.version,
            "task": self.task,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "rolling_samples": self.rolling_error.count,
            "accuracy": self.accuracy,
            "mean_absolute_error": self.rolling_error.value if self.task != CLASSIFICATION else None,
            "detector": {
                "name": self.concept.spec.name,
                "state": "drift" if last is not None else self.concept.state,
                "samples": self.concept.samples,
                "drifts": self.drifts,
            },
            "last_drift": None
            if last is None
            else {
                "detected_at": last.detected_at,
                "sample_index": last.change.sample_index,
                "onset_time": last.change.onset_time,
                "statistic": last.change.statistic,
                "reference_statistic": last.change.reference_statistic,
                "window_size": last.change.window_size,
            },
        }
