"""Live quality of one model version: rolling accuracy (or error), and its detectors:
concept drift on the errors, data drift on each input feature, prediction drift on the
answers."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.monitor.detectors import Change, ChangeDetector, DetectorSpec
from services.monitor.policy import MonitorPolicy
from services.monitor.records import CLASSIFICATION, LabelledSample, Prediction
from services.monitor.reference import OFF, PENDING, ReferenceLookup

CONCEPT = "concept"
DATA = "data"
PREDICTION = "prediction"


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


def _runs_by_names(
    predictions: Sequence[Prediction], indices: list[int]
) -> list[tuple[Sequence[str], list[int]]]:
    """``indices`` of ``predictions`` in runs of consecutive ones with the same feature names."""
    runs: list[tuple[Sequence[str], list[int]]] = []
    for i in indices:
        names = predictions[i].feature_names
        if runs and (runs[-1][0] is names or runs[-1][0] == names):
            runs[-1][1].append(i)
        else:
            runs.append((names, [i]))
    return runs


@dataclass(frozen=True)
class Finding:
    """A change found by one of a version's detectors."""

    kind: str
    """``concept``, ``data`` or ``prediction``."""
    name: str
    """The feature (data drift), the output such as ``label=1`` or ``value`` (prediction
    drift); empty for concept drift."""
    detector: str
    change: Change
    detected_at: float


class StreamWatch:
    """A detector per named stream (feature, class), created on first sight, at most ``limit``.

    ``seeds`` holds reference values per name (a sample of the training data): a detector
    is fed them before its first live value.
    """

    def __init__(
        self,
        kind: str,
        spec: DetectorSpec,
        history: int,
        limit: int,
        seeds: Mapping[str, Sequence[float]] | None = None,
    ):
        self.kind = kind
        self.spec = spec
        self._history = history
        self._limit = limit
        self._seeds = seeds or {}
        self.detectors: dict[str, ChangeDetector] = {}
        self.last: dict[str, Finding] = {}

    def update_many(
        self, name: str, values: Sequence[float], event_times: Sequence[float], now: float
    ) -> list[tuple[int, Finding]]:
        """Feed one stream's values in turn to its detector; each finding with the index of
        the value that raised it."""
        detector = self.detectors.get(name)
        if detector is None:
            if len(self.detectors) >= self._limit or not values:
                return []
            detector = self.detectors[name] = ChangeDetector(self.spec, self._history)
            seed = self._seeds.get(name)
            if seed:
                detector.seed(seed, event_times[0])
        found = []
        for index, change in detector.update_many(values, event_times):
            finding = self.last[name] = Finding(self.kind, name, self.spec.name, change, now)
            found.append((index, finding))
        return found

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {
                "samples": detector.samples,
                "drifts": detector.changes,
                "state": "drift" if name in self.last else detector.state,
                "reference": "training" if name in self._seeds else "recent_traffic",
            }
            for name, detector in sorted(self.detectors.items())
        }


class VersionQuality:
    """What the monitor knows about one model version's answers.

    Parameters
    ----------
    model, version
        The version watched.
    task
        ``classification`` (errors are 0/1) or ``regression`` (absolute errors).
    policy
        Detectors and windows. A binary concept detector cannot take absolute errors,
        so a regressor gets ADWIN instead.
    reference
        What data drift is measured against (see :mod:`services.monitor.reference`);
        None until the registry has been asked.
    """

    def __init__(
        self,
        model: str,
        version: int,
        task: str,
        policy: MonitorPolicy,
        reference: ReferenceLookup | None = None,
    ):
        self.model = model
        self.version = version
        self.task = task
        self._policy = policy
        spec = policy.detector
        self._concept_spec = DetectorSpec("ADWIN") if task != CLASSIFICATION and spec.binary else spec
        self.predictions = 0
        self.labelled = 0
        self.last_seen = 0.0
        self.drifts = 0
        self.reference = reference
        self.reset()

    def reset(self) -> None:
        """Start every detector and the rolling figures afresh (the version went live again)."""
        policy = self._policy
        self.concept = ChangeDetector(self._concept_spec, policy.history)
        self.rolling_error = RollingMean(policy.accuracy_window)
        self.last_drift: Finding | None = None
        self.data = self._data_watch()
        self.outputs = (
            StreamWatch(PREDICTION, policy.prediction_detector, policy.history, policy.max_watched_features)
            if policy.prediction_detector
            else None
        )
        self._classes: list[str] = []

    def _data_watch(self) -> StreamWatch | None:
        policy = self._policy
        if policy.data_detector is None:
            return None
        seeds = self.reference.samples if self.reference is not None and self.reference.seeded else None
        return StreamWatch(DATA, policy.data_detector, policy.history, policy.max_watched_features, seeds)

    def use_reference(self, reference: ReferenceLookup) -> None:
        """The answer on the version's training reference came: with a training sample, the
        data drift detectors start afresh from it (any live values they saw before were
        compared with nothing better than themselves)."""
        had = self.reference is not None and self.reference.seeded
        self.reference = reference
        if reference.seeded or had:
            self.data = self._data_watch()

    def observe_many(self, predictions: Sequence[Prediction], now: float) -> list[tuple[int, Finding]]:
        """Served predictions, in turn: they feed the data and prediction drift detectors, a
        stream at a time (see :meth:`ChangeDetector.update_many`); each finding with the index
        of its prediction, in the order one at a time would have found them."""
        start = self.predictions
        self.predictions += len(predictions)
        self.last_seen = now
        found: list[tuple[int, Finding]] = []
        if self.data is not None:
            every = self._policy.data_sample_every
            sampled = [i for i in range(len(predictions)) if (start + i + 1) % every == 0]
            found += self._observe_features(predictions, sampled, now)
        if self.outputs is not None:
            found += self._observe_outputs(predictions, now)
        # Stable: a prediction's data findings stay before its output findings, as they were.
        found.sort(key=lambda item: item[0])
        return found

    def _observe_features(
        self, predictions: Sequence[Prediction], sampled: list[int], now: float
    ) -> list[tuple[int, Finding]]:
        assert self.data is not None
        found = []
        for names, rows in _runs_by_names(predictions, sampled):
            times = [predictions[i].occurred_at for i in rows]
            columns = zip(*(predictions[i].features for i in rows), strict=False)
            column: Sequence[float]
            for name, column in zip(names, columns, strict=False):
                kept, at, where = column, times, rows
                if not all(map(math.isfinite, column)):
                    # Missing values (NaN) say nothing about the distribution of the others.
                    keep = [j for j, value in enumerate(column) if math.isfinite(value)]
                    kept, at, where = (
                        tuple(column[j] for j in keep),
                        [times[j] for j in keep],
                        [rows[j] for j in keep],
                    )
                found += [(where[j], finding) for j, finding in self.data.update_many(name, kept, at, now)]
        return found

    def _observe_outputs(self, predictions: Sequence[Prediction], now: float) -> list[tuple[int, Finding]]:
        assert self.outputs is not None
        if self.task != CLASSIFICATION:
            times = [p.occurred_at for p in predictions]
            values = [p.value for p in predictions]
            return self.outputs.update_many("value", values, times, now)
        # Each class's share of the answers, from the prediction where the class was first
        # seen; with two classes one of them says it all.
        streams: dict[str, tuple[list[int], list[float], list[float]]] = {}
        limit = self._policy.max_watched_features
        for index, prediction in enumerate(predictions):
            if prediction.label not in self._classes and len(self._classes) < limit:
                self._classes.append(prediction.label)
            for label in self._classes[:1] if len(self._classes) <= 2 else self._classes:
                rows, values, times = streams.setdefault(label, ([], [], []))
                rows.append(index)
                values.append(float(prediction.label == label))
                times.append(prediction.occurred_at)
        found = []
        for label, (rows, values, times) in streams.items():
            found += [(rows[j], f) for j, f in self.outputs.update_many(f"label={label}", values, times, now)]
        return found

    def add(self, sample: LabelledSample, now: float) -> Finding | None:
        """One labelled sample; the concept drift it reveals, if any."""
        error = sample.error
        self.labelled += 1
        self.last_seen = now
        self.rolling_error.add(error)
        change = self.concept.update(error, sample.event_time)
        if change is None:
            return None
        self.drifts += 1
        self.last_drift = Finding(CONCEPT, "", self.concept.spec.name, change, now)
        return self.last_drift

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
            "reference": self.reference.snapshot()
            if self.reference is not None
            else {"status": PENDING if self._policy.training_reference else OFF},
            "features": self.data.snapshot() if self.data else {},
            "outputs": self.outputs.snapshot() if self.outputs else {},
        }
