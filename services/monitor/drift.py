"""The monitor's core: every model version's quality, its drift, and when to retrain.

It sees the stream the join produces (each prediction once, each labelled sample once)
and model lifecycle changes, and answers with decisions: :class:`Drift` (publish a drift
event) and :class:`~services.monitor.retrain.RetrainRequest` (publish a train request).
It does no I/O and reads no clock: callers pass ``now``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.monitor.detectors import Change
from services.monitor.policy import MonitorPolicy
from services.monitor.quality import CONCEPT, DATA, PREDICTION, Finding, VersionQuality
from services.monitor.records import CLASSIFICATION, LabelledSample, Prediction
from services.monitor.reference import UNAVAILABLE, ReferenceLookup
from services.monitor.retrain import RetrainPolicy, RetrainRequest

__all__ = ["CONCEPT", "DATA", "PREDICTION", "Decision", "Drift", "DriftMonitor", "MonitorPolicy"]

MAX_VERSIONS_PER_MODEL = 8
"""Versions watched per model; the least recently seen one not live is dropped beyond that."""


def _runs_by_version(predictions: Sequence[Prediction]) -> list[list[Prediction]]:
    """``predictions`` by model (in order of first appearance), each model's in runs of
    consecutive predictions of one version.

    >>> runs = _runs_by_version([Prediction(str(i), m, v, "", False, "1", 0.0, 0.0)
    ...     for i, (m, v) in enumerate([("a", 1), ("b", 1), ("a", 1), ("a", 2), ("a", 1)])])
    >>> [[(p.model, p.version, p.id) for p in run] for run in runs]
    [[('a', 1, '0'), ('a', 1, '2')], [('a', 2, '3')], [('a', 1, '4')], [('b', 1, '1')]]
    """
    by_model: dict[str, list[list[Prediction]]] = {}
    for prediction in predictions:
        runs = by_model.setdefault(prediction.model, [])
        if runs and runs[-1][0].version == prediction.version:
            runs[-1].append(prediction)
        else:
            runs.append([prediction])
    return [run for runs in by_model.values() for run in runs]


@dataclass(frozen=True)
class Drift:
    """A detector fired on one model version."""

    id: str
    model: str
    version: int
    kind: str
    """``concept``, ``data`` or ``prediction``."""
    detector: str
    feature: str
    """The input feature (data drift) or output (prediction drift) that changed."""
    change: Change
    detected_at: float


Decision = Drift | RetrainRequest


@dataclass
class PairedScore:
    """A challenger (shadow or canary) and the live version, on the same labelled requests."""

    task: str
    samples: int = 0
    live_error: float = 0.0
    challenger_error: float = 0.0

    def add(self, live: LabelledSample, challenger: LabelledSample) -> None:
        self.samples += 1
        self.live_error += live.error
        self.challenger_error += challenger.error

    def snapshot(self) -> dict[str, Any]:
        live, challenger = self.live_error / self.samples, self.challenger_error / self.samples
        if self.task == CLASSIFICATION:
            return {"samples": self.samples, "accuracy": 1 - challenger, "live_accuracy": 1 - live}
        return {"samples": self.samples, "mean_absolute_error": challenger, "live_mean_absolute_error": live}


class DriftMonitor:
    """Watches model versions and decides on drift events and retrains.

    Examples
    --------
    A classifier whose error rate goes from 10% to 30% at sample 3,000:

    >>> import random
    >>> rng = random.Random(3)
    >>> monitor = DriftMonitor(MonitorPolicy(cooldown_seconds=3600, retrain_min_samples=100))
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
        self.retrain = RetrainPolicy(
            policy.cooldown_seconds, policy.retrain_min_samples, policy.retrain_max_attempts
        )
        self._new_id = new_id
        self._versions: dict[str, dict[int, VersionQuality]] = {}
        self._live: dict[str, int] = {}
        self._paired: dict[str, dict[tuple[int, int], PairedScore]] = {}
        self._references: dict[tuple[str, int], ReferenceLookup] = {}

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
        self._paired.pop(model, None)
        self._references = {key: ref for key, ref in self._references.items() if key[0] != model}
        self.retrain.restore(model, {})

    def reference_due(self, model: str, version: int, now: float) -> bool:
        """Whether to ask for the version's training reference now: never asked, or the
        registry was unavailable the last time and ``reference_retry_seconds`` have passed."""
        if not self.policy.training_reference:
            return False
        known = self._references.get((model, version))
        return known is None or (
            known.status == UNAVAILABLE and now >= known.at + self.policy.reference_retry_seconds
        )

    def use_reference(self, model: str, version: int, reference: ReferenceLookup) -> None:
        """The answer on a version's training reference (see :mod:`services.monitor.reference`):
        its data drift detectors are seeded from it, now if it is watched already, else when
        its first prediction arrives."""
        self._references[(model, version)] = reference
        quality = self._versions.get(model, {}).get(version)
        if quality is not None:
            quality.use_reference(reference)

    def observe(self, prediction: Prediction, now: float) -> list[Decision]:
        """A prediction was served (seen once, whether or not its label ever comes):
        data drift on its inputs, prediction drift on its answer."""
        return self.observe_many([prediction], now)

    def observe_many(self, predictions: Sequence[Prediction], now: float) -> list[Decision]:
        """:meth:`observe` for each prediction in turn, a version's predictions together
        (see :meth:`~services.monitor.quality.VersionQuality.observe_many`): the same decisions, the same order
        within each model (models are independent of each other)."""
        decisions: list[Decision] = []
        for run in _runs_by_version(predictions):
            # The first live answer of a newer version makes it live and starts its detectors
            # afresh: what came before it is observed before that.
            first_live = next((i for i, p in enumerate(run) if p.live), len(run))
            decisions += self._observe_version(run[:first_live], now)
            if first_live < len(run):
                self._note_live(run[0].model, run[0].version)
                decisions += self._observe_version(run[first_live:], now)
        return decisions

    def _observe_version(self, run: Sequence[Prediction], now: float) -> list[Decision]:
        if not run:
            return []
        decisions = []
        for index, finding in self._quality(run[0], now).observe_many(run, now):
            decisions += self._decide(run[index], [finding], now)
        return decisions

    def observe_labelled(self, sample: LabelledSample, now: float) -> list[Decision]:
        """A prediction met its label: one point on the version's error stream."""
        prediction = sample.prediction
        if prediction.live:
            self._note_live(prediction.model, prediction.version)
        finding = self._quality(prediction, now).add(sample, now)
        decisions = self._decide(prediction, [finding] if finding else [], now)
        # A sample that raised an alarm is already counted in the episode's window.
        if finding is None and self._on_live(prediction):
            request = self.retrain.on_labelled(prediction.model, prediction.version, now)
            if request is not None:
                decisions.append(request)
        return decisions

    def compare(self, live: LabelledSample, challenger: LabelledSample) -> None:
        """The live version and a shadow or canary answered the same request, now labelled."""
        model = live.prediction.model
        key = (challenger.prediction.version, live.prediction.version)
        scores = self._paired.setdefault(model, {})
        if key not in scores:
            scores[key] = PairedScore(live.prediction.task)
        scores[key].add(live, challenger)

    def version_live(self, model: str, version: int) -> None:
        """``version`` serves production from now on (a promotion or a rollback): its
        detectors start afresh and the drift episode of the previous version ends."""
        self._live[model] = version
        quality = self._versions.get(model, {}).get(version)
        if quality is not None:
            quality.reset()
        self.retrain.on_version_live(model, version)

    def _decide(self, prediction: Prediction, findings: list[Finding], now: float) -> list[Decision]:
        decisions: list[Decision] = []
        for finding in findings:
            drift = Drift(
                id=self._new_id(),
                model=prediction.model,
                version=prediction.version,
                kind=finding.kind,
                detector=finding.detector,
                feature=finding.name,
                change=finding.change,
                detected_at=now,
            )
            decisions.append(drift)
            if self._warrants_retrain(drift) and self._on_live(prediction):
                request = self.retrain.on_drift(
                    drift.model,
                    drift.version,
                    drift.id,
                    onset_time=drift.change.onset_time,
                    window_size=drift.change.window_size,
                    now=now,
                    episode_id=self._new_id(),
                )
                if request is not None:
                    decisions.append(request)
        return decisions

    def _warrants_retrain(self, drift: Drift) -> bool:
        if drift.kind == CONCEPT:
            # A model that got better is worth a drift event, not a retrain.
            return drift.change.statistic > drift.change.reference_statistic
        return drift.kind == DATA and self.policy.retrain_on_data_drift

    def _on_live(self, prediction: Prediction) -> bool:
        return prediction.live and self._live.get(prediction.model) == prediction.version

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
                self.policy,
                self._references.get((prediction.model, prediction.version)),
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
            self._references.pop((model, oldest.version), None)

    def shadow_comparison(self, model: str) -> list[dict[str, Any]]:
        """Each shadow or canary version against the live one, on the requests both answered."""
        return [
            {"version": challenger, "against": live, **score.snapshot()}
            for (challenger, live), score in sorted(self._paired.get(model, {}).items())
        ]

    def retrain_status(self, model: str, now: float) -> dict[str, Any]:
        """When the model's last retrain was asked for, its cooldown, and what holds the next
        one back (None when nothing does)."""
        last = self.retrain.last_request(model)
        hold = self.retrain.hold(model, now)
        return {
            "last_requested_at": last,
            "cooldown_until": None if last is None else last + self.retrain.cooldown_seconds,
            "hold": None
            if hold is None
            else {"reason": hold.reason, "detail": hold.detail, "until": hold.until},
        }

    def status(self, now: float) -> list[dict[str, Any]]:
        """Per model: the live version, the drift episode, what holds a retrain back at ``now``,
        and every watched version."""
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
                        "attempt": episode.attempt + 1,
                        "outcome": episode.outcome,
                    },
                    "retrain": self.retrain_status(model, now),
                    "versions": [q.snapshot() for _, q in sorted(self._versions[model].items())],
                    "shadow_comparison": self.shadow_comparison(model),
                }
            )
        return out
