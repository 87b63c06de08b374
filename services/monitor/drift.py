"""The monitor's core: every model version's quality, its drift, and when to retrain.

It sees the stream the join produces (each prediction once, each labelled sample once)
and model lifecycle changes, and answers with decisions: :class:`Drift` (publish a drift
event) and :class:`~services.monitor.retrain.RetrainRequest` (publish a train request).
It does no I/O and reads no clock: callers pass ``now``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.monitor.detectors import Change, DetectorSpec
from services.monitor.quality import VersionQuality
from services.monitor.records import LabelledSample, Prediction
from services.monitor.retrain import RetrainPolicy, RetrainRequest

CONCEPT = "concept"
MAX_VERSIONS_PER_MODEL = 8
"""Versions watched per model; the oldest not live is dropped beyond that."""


@dataclass(frozen=True)
class MonitorPolicy:
    detector: DetectorSpec = DetectorSpec()
    accuracy_window: int = 1000
    history: int = 20_000
    cooldown_seconds: float = 600.0
    retrain_min_samples: int = 200


@dataclass(frozen=True)
class Drift:
    """A detector fired on one model version."""

    id: str
    model: str
    version: int
    kind: str
    detector: str
    feature: str
    change: Change
    detected_at: float


Decision = Drift | RetrainRequest


class DriftMonitor:
    """Watches model versions and decides on drift events and retrains.

    Examples
    --------
    A classifier whose error rate goes from 10% to 30% at sample 3,000:

    >>> import random
    >>> rng = random.Random(3)
    >>> monitor = DriftMonitor(MonitorPolicy(cooldown_seconds=60, retrain_min_samples=100))
    >>> from services.monitor.records import Label
    >>> decisions = []
    >>> for i in range(6000):
    ...     wrong = rng.random() < (0.1 if i < 3000 else 0.3)
    ...     p = Prediction(f"e{i}", "churn", 1, "production", False, "1", 0.0, float(i))
    ...     label = Label(f"e{i}", "0" if wrong else "1", None, float(i), float(i) + 1)
    ...     decisions += monitor.observe_labelled(LabelledSample(p, label), now=float(i) + 1)
    >>> drift, request = decisions[0], next(d for d in decisions if isinstance(d, RetrainRequest))
    >>> drift.kind, drift.change.sample_index > 3000, request.onset_time == drift.change.onset_time
    ('concept', True, True)
    >>> sum(isinstance(d, RetrainRequest) for d in decisions)
    1
    """

    def __init__(self, policy: MonitorPolicy, new_id: Callable[[], str] = lambda: uuid.uuid4().hex):
        self.policy = policy
        self.retrain = RetrainPolicy(policy.cooldown_seconds, policy.retrain_min_samples)
        self._new_id = new_id
        self._versions: dict[str, dict[int, VersionQuality]] = {}
        self._live: dict[str, int] = {}

    def models(self) -> list[str]:
        return sorted(self._versions)

    def live_version(self, model: str) -> int | None:
        return self._live.get(model)

    def quality(self, model: str, version: int) -> VersionQuality | None:
        return self._versions.get(model, {}).get(version)

    def forget(self, model: str) -> None:
        """Drop everything about ``model``: another monitor process watches it now."""
        self._versions.pop(model, None)
        self._live.pop(model, None)
        self.retrain.restore(model, {})

    def observe(self, prediction: Prediction, now: float) -> list[Decision]:
        """A prediction was served (counted once, whether or not its label ever comes)."""
        self._quality(prediction, now).observe(now)
        if prediction.live:
            self._note_live(prediction.model, prediction.version)
        return []

    def observe_labelled(self, sample: LabelledSample, now: float) -> list[Decision]:
        """A prediction met its label: one point on the version's error stream."""
        prediction = sample.prediction
        quality = self._quality(prediction, now)
        change = quality.add(sample, now)
        decisions: list[Decision] = []
        if prediction.live:
            self._note_live(prediction.model, prediction.version)
        on_live = prediction.live and self._live[prediction.model] == prediction.version
        if change is not None:
            drift = Drift(
                id=self._new_id(),
                model=prediction.model,
                version=prediction.version,
                kind=CONCEPT,
                detector=quality.concept.spec.name,
                feature="",
                change=change,
                detected_at=now,
            )
            decisions.append(drift)
            # A model that got better is worth a drift event, not a retrain.
            if on_live and change.statistic > change.reference_statistic:
                request = self.retrain.on_drift(
                    prediction.model,
                    prediction.version,
                    drift.id,
                    onset_time=change.onset_time,
                    window_size=change.window_size,
                    now=now,
                    episode_id=self._new_id(),
                )
                if request is not None:
                    decisions.append(request)
                return decisions
        if on_live:
            request = self.retrain.on_labelled(prediction.model, prediction.version, now)
            if request is not None:
                decisions.append(request)
        return decisions

    def version_live(self, model: str, version: int) -> None:
        """``version`` serves production from now on (a promotion or a rollback): its
        detectors start afresh and the drift episode of the previous version ends."""
        self._live[model] = version
        quality = self._versions.get(model, {}).get(version)
        if quality is not None:
            quality.reset()
        self.retrain.on_version_live(model, version)

    def _note_live(self, model: str, version: int) -> None:
        # Only a newer version takes over: answers from the old one still trickle in
        # after a swap, and a rollback to an older one arrives as a model event instead.
        live = self._live.get(model)
        if live is None:
            self._live[model] = version
        elif version > live:
            self.version_live(model, version)

    def _quality(self, prediction: Prediction, now: float) -> VersionQuality:
        versions = self._versions.setdefault(prediction.model, {})
        quality = versions.get(prediction.version)
        if quality is None:
            if len(versions) >= MAX_VERSIONS_PER_MODEL:
                self._forget_oldest(prediction.model)
            quality = VersionQuality(
                prediction.model,
                prediction.version,
                prediction.task,
                self.policy.detector,
                self.policy.accuracy_window,
                self.policy.history,
            )
            versions[prediction.version] = quality
        return quality

    def _forget_oldest(self, model: str) -> None:
        versions = self._versions[model]
        live = self._live.get(model)
        candidates = [q for v, q in versions.items() if v != live]
        if candidates:
            oldest = min(candidates, key=lambda q: q.last_seen)
            del versions[oldest.version]

    def status(self) -> list[dict[str, Any]]:
        """Per model: the live version, the drift episode, and every watched version."""
        out = []
        for model in self.models():
            episode = self.retrain.episode(model)
            out.append(
                {
                    "model": model,
                    "live_version": self._live.get(model),
                    "episode": None
                    if episode is None
                    else {
                        "id": episode.id,
                        "version": episode.version,
                        "drift_event_id": episode.drift_event_id,
                        "onset_time": episode.onset_time,
                        "opened_at": episode.opened_at,
                        "samples_since_onset": episode.samples,
                        "retrain_requested_at": episode.requested_at,
                    },
                    "versions": [q.snapshot() for _, q in sorted(self._versions[model].items())],
                }
            )
        return out
