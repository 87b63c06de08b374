"""The recent past of every watched model, kept in memory for people to look at.

The monitor's status is a picture of now. People also want to see how a version's live
accuracy moved, where the drift events fell on that line, and what the retrains did. This
keeps, per model, a bounded series of points sampled from the status at a fixed interval,
and the latest drift events, retrain requests and changes of the live version. It is a
ring buffer, not a store: it lives in the process that watches the model, starts empty
when the process starts or the model moves to another process, and forgets the oldest
entries beyond its bounds. It does no I/O and reads no clock: callers pass ``now``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from services.monitor.drift import Decision, Drift
from services.monitor.retrain import RetrainRequest


@dataclass(frozen=True)
class Point:
    """One version's figures at one moment."""

    at: float
    accuracy: float | None
    """Rolling accuracy (classifiers); None before any label."""
    mean_absolute_error: float | None
    """Rolling mean absolute error (regressors)."""
    predictions: int
    labelled: int


@dataclass
class ModelTimeline:
    """One model's series and events, each bounded."""

    points: int
    events: int
    versions: dict[int, deque[Point]] = field(default_factory=dict)
    drifts: deque[dict[str, Any]] = field(init=False)
    retrains: deque[dict[str, Any]] = field(init=False)
    live_changes: deque[dict[str, Any]] = field(init=False)
    live_version: int | None = None

    def __post_init__(self) -> None:
        self.drifts = deque(maxlen=self.events)
        self.retrains = deque(maxlen=self.events)
        self.live_changes = deque(maxlen=self.events)

    def view(self) -> dict[str, Any]:
        return {
            "live_version": self.live_version,
            "versions": {str(v): [asdict(p) for p in points] for v, points in sorted(self.versions.items())},
            "drifts": list(self.drifts),
            "retrains": list(self.retrains),
            "live_changes": list(self.live_changes),
        }


class Timeline:
    """Bounded timeline per model: points sampled from the status, and the decisions.

    Parameters
    ----------
    points
        Points kept per version (at one per sampling interval: ``points * interval`` of past).
    events
        Drift events, retrain requests and live-version changes kept per model, each.

    Examples
    --------
    >>> timeline = Timeline(points=3, events=10)
    >>> def status(accuracy, live=1):
    ...     return [{"model": "churn", "live_version": live, "versions": [
    ...         {"version": 1, "accuracy": accuracy, "mean_absolute_error": None,
    ...          "predictions": 10, "labelled": 8}]}]
    >>> for second, accuracy in enumerate([0.9, 0.9, 0.8, 0.7]):
    ...     timeline.sample(status(accuracy), now=float(second))
    >>> [p["accuracy"] for p in timeline.model("churn")["versions"]["1"]]
    [0.9, 0.8, 0.7]
    >>> timeline.model("churn")["live_changes"]
    [{'at': 0.0, 'version': 1, 'previous_version': None}]
    >>> timeline.sample([], now=5.0)  # another process watches it now
    >>> timeline.model("churn") is None
    True
    """

    def __init__(self, points: int, events: int):
        if points < 1 or events < 1:
            raise ValueError("points and events must be at least 1")
        self._points = points
        self._events = events
        self._models: dict[str, ModelTimeline] = {}

    def sample(self, status: list[dict[str, Any]], now: float) -> None:
        """Add a point per watched version from :meth:`DriftMonitor.status`; forget models
        and versions the status no longer has (moved to another process, or dropped)."""
        watched = {entry["model"]: entry for entry in status}
        for gone in set(self._models) - set(watched):
            del self._models[gone]
        for name, entry in watched.items():
            model = self._model(name)
            live = entry.get("live_version")
            if live != model.live_version:
                model.live_changes.append(
                    {"at": now, "version": live, "previous_version": model.live_version}
                )
                model.live_version = live
            seen = set()
            for version in entry.get("versions", []):
                number = int(version["version"])
                seen.add(number)
                series = model.versions.setdefault(number, deque(maxlen=self._points))
                series.append(
                    Point(
                        at=now,
                        accuracy=version.get("accuracy"),
                        mean_absolute_error=version.get("mean_absolute_error"),
                        predictions=int(version.get("predictions", 0)),
                        labelled=int(version.get("labelled", 0)),
                    )
                )
            for dropped in set(model.versions) - seen:
                del model.versions[dropped]

    def record(self, decision: Decision) -> None:
        """A drift event or a retrain request the monitor just published."""
        if isinstance(decision, Drift):
            change = decision.change
            self._model(decision.model).drifts.append(
                {
                    "id": decision.id,
                    "version": decision.version,
                    "kind": decision.kind,
                    "detector": decision.detector,
                    "feature": decision.feature,
                    "detected_at": decision.detected_at,
                    "onset_time": change.onset_time,
                    "statistic": change.statistic,
                    "reference_statistic": change.reference_statistic,
                    "window_size": change.window_size,
                    "sample_index": change.sample_index,
                }
            )
        elif isinstance(decision, RetrainRequest):
            self._model(decision.model).retrains.append(
                {
                    "parent_version": decision.parent_version,
                    "idempotency_key": decision.idempotency_key,
                    "drift_event_id": decision.drift_event_id,
                    "onset_time": decision.onset_time,
                    "requested_at": decision.requested_at,
                }
            )

    def model(self, name: str) -> dict[str, Any] | None:
        """One model's timeline (oldest first), or None when this process does not watch it."""
        model = self._models.get(name)
        return None if model is None else {"model": name, **model.view()}

    def _model(self, name: str) -> ModelTimeline:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = ModelTimeline(self._points, self._events)
        return model
