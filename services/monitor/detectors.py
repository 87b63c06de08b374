"""river's drift detectors, wrapped to say *where* a change began, not only *that* it happened.

A retrain after drift should learn from the data since the change, so the monitor needs
the change's onset in event time. A detector says *that* the stream changed; *where* is
estimated afterwards, over the samples since the previous change, as the split that best
separates two means (:func:`locate_change`). Detectors' own windows are no substitute:
ADWIN, for one, keeps many pre-change samples after an alarm, and training on them
teaches the retrained model the old concept again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
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

    Samples are appended to lists and moved into the ring's arrays a block at a time:
    writing one numpy element costs more than the detector's own update, and a stream's
    history is read only when its detector fires.

    >>> history = SampleHistory(capacity=3)
    >>> for t in range(5):
    ...     history.append(float(t), t * 10.0)
    >>> len(history), history.last(2)[1].tolist()
    (3, [30.0, 40.0])
    """

    BLOCK = 256
    """Samples held in lists before they are written to the arrays."""

    def __init__(self, capacity: int):
        self._times = np.zeros(capacity)
        self._values = np.zeros(capacity)
        self._capacity = capacity
        self._next = 0
        self._size = 0
        self._new_times: list[float] = []
        self._new_values: list[float] = []

    def __len__(self) -> int:
        return min(self._size + len(self._new_times), self._capacity)

    def append(self, event_time: float, value: float) -> None:
        self._new_times.append(event_time)
        self._new_values.append(value)
        if len(self._new_times) >= self.BLOCK:
            self._flush()

    def extend(self, event_times: Sequence[float], values: Sequence[float]) -> None:
        """:meth:`append` each pair in turn."""
        self._new_times.extend(event_times)
        self._new_values.extend(values)
        if len(self._new_times) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        times, values = self._new_times[-self._capacity :], self._new_values[-self._capacity :]
        index = (self._next + np.arange(len(times))) % self._capacity
        self._times[index] = times
        self._values[index] = values
        self._next = (self._next + len(times)) % self._capacity
        self._size = min(self._size + len(times), self._capacity)
        self._new_times.clear()
        self._new_values.clear()

    def last(self, n: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Times and values of ``n`` samples, ending ``skip`` samples before the newest."""
        self._flush()
        n = max(0, min(n, self._size - skip))
        end = self._next - skip
        index = np.arange(end - n, end) % self._capacity
        return self._times[index], self._values[index]


def locate_change(values: np.ndarray, min_segment: int = 5, direction: int = 0) -> int:
    """Index of the first sample after the most likely single change in the mean.

    The split ``k`` maximising ``|mean(after) - mean(before)| * sqrt(k (n - k) / n)``, the
    CUSUM statistic of binary segmentation; both sides keep at least ``min_segment``
    samples. Linear time, from cumulative sums. With ``direction`` 1 (or -1) only a rise
    (or a fall) of the mean counts.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> errors = np.concatenate([rng.random(1500) < 0.05, rng.random(60) < 0.5]).astype(float)
    >>> abs(locate_change(errors) - 1500) <= 10
    True
    >>> locate_change(np.zeros(8))
    0
    >>> locate_change(errors, direction=1) == locate_change(errors)
    True
    """
    n = len(values)
    if n < 2 * min_segment:
        return 0
    cumulative = np.cumsum(values, dtype=float)
    split = np.arange(min_segment, n - min_segment + 1)
    before = cumulative[split - 1] / split
    after = (cumulative[-1] - cumulative[split - 1]) / (n - split)
    difference = (after - before) * direction if direction else np.abs(after - before)
    score = difference * np.sqrt(split * (n - split) / n)
    if not np.any(score > 0):
        return 0
    return int(split[np.argmax(score)])


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
    """Event time (epoch seconds) of the change, located in event-time order (see :func:`_onset`)."""


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

    The change is located close to where it happened, and the error rate after it is above
    the one before:

    >>> abs(change.onset_time - 2000) < 150, change.statistic > change.reference_statistic
    (True, True)
    """

    def __init__(self, spec: DetectorSpec, history: int = 20_000):
        self.spec = spec
        self._detector = spec.build()
        # Read once: update runs for every feature of every prediction.
        self._binary = spec.binary
        self._warns = hasattr(self._detector, "warning_detected")
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

    def seed(self, values: Iterable[float], event_time: float) -> None:
        """Feed reference values before any live one: they set what "no change" looks like.

        They join the history (so a change can be located at the boundary between them and
        the live values, with ``event_time`` as its onset) but are not counted as samples,
        and a change among them is not reported.

        >>> detector = ChangeDetector(DetectorSpec("ADWIN", {"delta": 0.0002}))
        >>> detector.seed([0.0, 1.0] * 128, event_time=100.0)
        >>> change = next(c for t in range(500) if (c := detector.update(1.5, 100.0 + t)))
        >>> detector.samples, change.sample_index, change.onset_time
        (32, 31, 100.0)
        """
        for value in values:
            self._since_change += 1
            self._history.append(event_time, value)
            self._detector.update(bool(value) if self._binary else value)
        self._warning_at = None

    def update(self, value: float, event_time: float) -> Change | None:
        changes = self.update_many((value,), (event_time,))
        return changes[0][1] if changes else None

    def update_many(self, values: Sequence[float], event_times: Sequence[float]) -> list[tuple[int, Change]]:
        """:meth:`update` with each value in turn; the changes found, each with the index of
        the value that raised it.

        The detect stage feeds a feature's values a batch at a time: one call into this
        loop, rather than one per value, was most of what data drift cost per prediction.

        >>> one, many = ChangeDetector(DetectorSpec("ADWIN")), ChangeDetector(DetectorSpec("ADWIN"))
        >>> values = [0.0] * 1000 + [1.0] * 100
        >>> found = [(i, c) for i, v in enumerate(values) if (c := one.update(v, float(i)))]
        >>> many.update_many(values, [float(i) for i in range(1100)]) == found
        True
        """
        self._history.extend(event_times, values)
        detector, binary, warns = self._detector, self._binary, self._warns
        count, since = self._count, self._since_change
        changes = []
        last = len(values) - 1
        for index, value in enumerate(values):
            count += 1
            since += 1
            detector.update(bool(value) if binary else value)
            drifted = detector.drift_detected
            if warns:
                if detector.warning_detected:
                    if self._warning_at is None:
                        self._warning_at = since
                elif not drifted:
                    self._warning_at = None
            if drifted:
                self._count, self._since_change = count, since
                changes.append((index, self._change(skip=last - index)))
                since = self._since_change
        self._count, self._since_change = count, since
        return changes

    def _change(self, skip: int) -> Change:
        """The change the detector found ``skip`` values before the newest in the history."""
        times, values = self._history.last(self._since_change, skip)
        start = locate_change(values)
        before, after = values[:start], values[start:]
        statistic = float(after.mean())
        reference = float(before.mean()) if len(before) else statistic
        change = Change(
            sample_index=self._count - 1,
            window_size=len(after),
            statistic=statistic,
            reference_statistic=reference if math.isfinite(reference) else statistic,
            onset_time=_onset(times, values, start, statistic - reference),
        )
        self._since_change = len(after)
        self._warning_at = None
        self.changes += 1
        return change


def _onset(times: np.ndarray, values: np.ndarray, start: int, rise: float) -> float:
    """Event time of a change found at ``start`` in arrival order, whose mean moved by ``rise``.

    Samples do not arrive in event-time order (a label can come long after its neighbours, a
    backlog is read partition by partition), so the oldest event time after ``start`` can lie
    far before the change: one late label there once placed a drift 1,443 samples early and
    its retrain learnt the old concept. The change is located again with the samples in
    event-time order, counting only a move in the direction the detector saw: where event
    times of the two sides overlap, the largest move either way can be the wrong way round.

    >>> times = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    >>> values = np.array([0.0] * 10 + [1.0] * 10)
    >>> late = times.copy(); late[15] = 1.5  # a post-change sample that happened before it
    >>> _onset(times, values, 10, 1.0), _onset(late, values, 10, 1.0)
    (10.0, 10.0)
    """
    fallback = float(times[start:].min())
    if rise == 0:
        return fallback
    order = np.argsort(times, kind="stable")  # stable: reference values share one time
    split = locate_change(values[order], direction=1 if rise > 0 else -1)
    return float(times[order][split]) if split else fallback
