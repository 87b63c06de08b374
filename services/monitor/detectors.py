"""river's drift detectors, wrapped to say *where* a change began, not only *that* it happened.

A retrain after drift should learn from the data since the change, so the monitor needs
the change's onset in event time. ADWIN reports it directly: after an alarm its window
holds only the post-change samples. For detectors with a warning zone (DDM and friends)
the onset is the first warning; for the others it is bounded by the previous alarm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift
from river.drift import binary

CONCEPT_DETECTORS: dict[str, Callable[..., Any]] = {
    "ADWIN": drift.ADWIN,
    "PageHinkley": drift.PageHinkley,
    "KSWIN": drift.KSWIN,
    "DDM": binary.DDM,
    "EDDM": binary.EDDM,
    "FHDDM": binary.FHDDM,
    "HDDMA": binary.HDDMA,
    "HDDMW": binary.HDDMW,
}
"""The detectors an operator can choose by name."""

BINARY_DETECTORS = frozenset({"DDM", "EDDM", "FHDDM", "HDDMA", "HDDMW"})
"""Detectors for a stream of booleans (right or wrong), so for classifiers only."""


@dataclass(frozen=True)
class DetectorSpec:
    """Which river detector to run, with which parameters; checked when created.

    >>> DetectorSpec("ADWIN", {"delta": 0.01}).build().delta
    0.01
    >>> DetectorSpec("ADWN")
    Traceback (most recent call last):
    ...
    ValueError: unknown detector 'ADWN'; known: ADWIN, PageHinkley, KSWIN, DDM, EDDM, FHDDM, HDDMA, HDDMW
    """

    name: str = "ADWIN"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in CONCEPT_DETECTORS:
            raise ValueError(f"unknown detector {self.name!r}; known: {', '.join(CONCEPT_DETECTORS)}")
        try:
            self.build()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad parameters for {self.name}: {exc}") from None

    @property
    def binary(self) -> bool:
        return self.name in BINARY_DETECTORS

    def build(self) -> Any:
        return CONCEPT_DETECTORS[self.name](**dict(self.params))


class SampleHistory:
    """The last ``capacity`` samples of a stream: event time and value, in arrival order.

    >>> history = SampleHistory(capacity=3)
    >>> for t in range(5):
    ...     history.append(float(t), t * 10.0)
    >>> len(history), history.last(2)[1].tolist()
    (3, [30.0, 40.0])
    """

    def __init__(self, capacity: int):
        self._times = np.zeros(capacity)
        self._values = np.zeros(capacity)
        self._capacity = capacity
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, event_time: float, value: float) -> None:
        self._times[self._next] = event_time
        self._values[self._next] = value
        self._next = (self._next + 1) % self._capacity
        self._size = min(self._size + 1, self._capacity)

    def last(self, n: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Times and values of ``n`` samples, ending ``skip`` samples before the newest."""
        n = max(0, min(n, self._size - skip))
        end = self._next - skip
        index = np.arange(end - n, end) % self._capacity
        return self._times[index], self._values[index]


@dataclass(frozen=True)
class Change:
    """A detected change in one stream."""

    sample_index: int
    """Index (from 0) of the sample that raised the alarm."""
    window_size: int
    """Samples after the change: the detector's post-change window."""
    statistic: float
    """Mean of the stream over the post-change window (an error rate on an error stream)."""
    reference_statistic: float
    """Mean over the samples before it, since the previous change."""
    onset_time: float
    """Event time (epoch seconds) of the oldest sample in the post-change window."""


class ChangeDetector:
    """One river detector over one numeric stream, reporting each change with its onset.

    Parameters
    ----------
    spec
        The river detector to run.
    history
        Samples remembered to place the onset; a longer post-change window is cut to it.

    Examples
    --------
    An error rate that goes from 10% to 30% at sample 2,000:

    >>> import random
    >>> rng = random.Random(1)
    >>> detector = ChangeDetector(DetectorSpec("ADWIN"))
    >>> changes = [
    ...     detector.update(float(rng.random() < (0.1 if i < 2000 else 0.3)), event_time=float(i))
    ...     for i in range(4000)
    ... ]
    >>> change = next(c for c in changes if c is not None)
    >>> 2000 < change.sample_index < 2400
    True

    ADWIN cuts its window conservatively, so the post-change window starts at or before
    the true change, and its error rate is above the one before it:

    >>> change.onset_time <= 2000, change.statistic > change.reference_statistic
    (True, True)
    """

    def __init__(self, spec: DetectorSpec, history: int = 20_000):
        self.spec = spec
        self._detector = spec.build()
        self._history = SampleHistory(history)
        self._count = 0
        self._since_change = 0
        self._warning_at: int | None = None
        self.changes = 0

    @property
    def samples(self) -> int:
        return self._count

    @property
    def state(self) -> str:
        """``warning`` while a detector with a warning zone is in it, else ``stable``."""
        return "warning" if self._warning_at is not None else "stable"

    def update(self, value: float, event_time: float) -> Change | None:
        self._count += 1
        self._since_change += 1
        self._history.append(event_time, value)
        self._detector.update(bool(value) if self.spec.binary else value)
        if getattr(self._detector, "warning_detected", False):
            if self._warning_at is None:
                self._warning_at = self._since_change
        elif not self._detector.drift_detected:
            self._warning_at = None
        if not self._detector.drift_detected:
            return None
        return self._change()

    def _change(self) -> Change:
        window = self._post_change_window()
        times, values = self._history.last(window)
        _, before = self._history.last(self._since_change - window, skip=window)
        statistic = float(values.mean())
        reference = float(before.mean()) if len(before) else statistic
        change = Change(
            sample_index=self._count - 1,
            window_size=len(values),
            statistic=statistic,
            reference_statistic=reference if math.isfinite(reference) else statistic,
            onset_time=float(times.min()),
        )
        self._since_change = len(values)
        self._warning_at = None
        self.changes += 1
        return change

    def _post_change_window(self) -> int:
        width = getattr(self._detector, "width", None)
        if width is not None:
            window = int(width)
        elif self._warning_at is not None:
            window = self._since_change - self._warning_at + 1
        else:
            window = self._since_change
        return max(1, min(window, self._since_change, len(self._history)))
