"""The monitor's Prometheus metrics (``mlops_monitor_*``)."""

from __future__ import annotations

import collections
import contextlib
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from services.monitor.drift import DriftMonitor
    from services.monitor.records import LabelledSample
    from services.monitor.retrain import Hold

PREFIX = "mlops_monitor"

PREDICTIONS = Counter(
    f"{PREFIX}_predictions_total",
    "Predicted rows seen once each (duplicates excluded), by model and version.",
    ["model", "version"],
)
LABELLED = Counter(
    f"{PREFIX}_labelled_samples_total",
    "Predictions joined with their label, by model and version.",
    ["model", "version"],
)
ACCURACY = Gauge(
    f"{PREFIX}_accuracy_ratio",
    "Rolling accuracy of a classifier version over its last labelled samples.",
    ["model", "version"],
)
MEAN_ABSOLUTE_ERROR = Gauge(
    f"{PREFIX}_mean_absolute_error",
    "Rolling mean absolute error of a regressor version over its last labelled samples.",
    ["model", "version"],
)
LABEL_LAG = Histogram(
    f"{PREFIX}_label_lag_seconds",
    "Time from a prediction to its label becoming available.",
    ["model"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
DRIFTS = Counter(
    f"{PREFIX}_drift_events_total",
    "Drift events raised, by model, version, kind (concept, data, prediction), detector and "
    "feature (the input feature for data drift, the output for prediction drift).",
    ["model", "version", "kind", "detector", "feature"],
)
SHADOW_ACCURACY = Gauge(
    f"{PREFIX}_shadow_accuracy_ratio",
    "Accuracy of a shadow or canary version on the labelled requests it answered alongside the live one.",
    ["model", "version", "against"],
)
SHADOW_LIVE_ACCURACY = Gauge(
    f"{PREFIX}_shadow_baseline_accuracy_ratio",
    "Accuracy of the live version on the same requests as the shadow or canary it is compared with.",
    ["model", "version", "against"],
)
RETRAINS = Counter(f"{PREFIX}_retrain_requests_total", "Retrain requests sent after drift.", ["model"])
RETRAIN_HELD = Gauge(
    f"{PREFIX}_retrain_held",
    "1 while a drift episode of the model is not asking for a retrain, labelled with why: "
    "min_samples, cooldown, requested, candidate_failed, attempt_limit (see docs/monitor.md).",
    ["model", "reason"],
)
RETRAIN_HELD_UNTIL = Gauge(
    f"{PREFIX}_retrain_held_until_timestamp_seconds",
    "When the model's retrain hold ends (Unix time); absent for min_samples, which ends on samples.",
    ["model", "reason"],
)
DUPLICATES = Counter(
    f"{PREFIX}_duplicates_total",
    "Predictions or labels received again (redelivery) and not counted twice.",
    ["kind"],
)
JOIN_EXPIRED = Counter(
    f"{PREFIX}_join_expired_total",
    "Predictions that never got a label, and labels that never met a prediction, within the join window.",
    ["kind"],
)
JOIN_PENDING = Gauge(f"{PREFIX}_join_entries", "Row ids held by this process's join table.")
ALERTS = Counter(
    f"{PREFIX}_alerts_total",
    "Webhook alerts by outcome: delivered, rejected (4xx), failed (after retries), refused "
    "(the target resolved to a forbidden address), dropped (queue full).",
    ["outcome"],
)
REFERENCE_LOOKUPS = Counter(
    f"{PREFIX}_reference_lookups_total",
    "Answers on versions' training references: training (data drift measured against a sample of "
    "the training data), none (the version has no profile), unavailable (the registry could not "
    "be asked); without one, features are compared with their own earlier traffic.",
    ["outcome"],
)
TRAINING_REFERENCE = Gauge(
    f"{PREFIX}_training_reference",
    "1 when a version's data drift is measured against its training data, 0 when against its own "
    "earlier traffic (no profile, or the registry unavailable).",
    ["model", "version"],
)


_held: dict[str, str] = {}
"""The reason exported per model, so a hold that ends or changes leaves no stale series."""


def export_hold(model: str, hold: Hold | None) -> None:
    """Export what holds ``model``'s retrain back (nothing, when ``hold`` is None)."""
    previous = _held.pop(model, None)
    if previous is not None:
        for gauge in (RETRAIN_HELD, RETRAIN_HELD_UNTIL):
            with contextlib.suppress(KeyError):  # absent: never set for this reason
                gauge.remove(model, previous)
    if hold is None:
        return
    _held[model] = hold.reason
    RETRAIN_HELD.labels(model, hold.reason).set(1)
    if hold.until is not None:
        RETRAIN_HELD_UNTIL.labels(model, hold.reason).set(hold.until)


class Tally:
    """What one batch of the detect stage adds to the per-version metrics, exported once
    per batch: finding a metric's child for its labels costs 2 us, four times what counting
    does, and per sample there were four of them."""

    def __init__(self) -> None:
        self.predictions: collections.Counter[tuple[str, int]] = collections.Counter()
        self.labelled: collections.Counter[tuple[str, int]] = collections.Counter()
        self.label_lags: dict[str, list[float]] = {}
        self.models: set[str] = set()
        """Models the batch touched: their retrain holds are exported again."""

    def export(self, monitor: DriftMonitor, now: float) -> None:
        for model in self.models:
            export_hold(model, monitor.retrain.hold(model, now))
        for (model, version), count in self.predictions.items():
            PREDICTIONS.labels(model, str(version)).inc(count)
        for model, lags in self.label_lags.items():
            histogram = LABEL_LAG.labels(model)
            for lag in lags:
                histogram.observe(lag)
        for (model, version), count in self.labelled.items():
            LABELLED.labels(model, str(version)).inc(count)
            quality = monitor.quality(model, version)
            if quality is None:
                continue
            if quality.accuracy is not None:
                ACCURACY.labels(model, str(version)).set(quality.accuracy)
            elif quality.rolling_error.value is not None:
                MEAN_ABSOLUTE_ERROR.labels(model, str(version)).set(quality.rolling_error.value)


def export_comparison(monitor: DriftMonitor, live: LabelledSample, challenger: LabelledSample) -> None:
    """Export how a shadow or canary compares with the live version, after a new pair."""
    model = live.prediction.model
    for entry in monitor.shadow_comparison(model):
        if entry["version"] == challenger.prediction.version and entry["against"] == live.prediction.version:
            labels = (model, str(entry["version"]), str(entry["against"]))
            if "accuracy" in entry:
                SHADOW_ACCURACY.labels(*labels).set(entry["accuracy"])
                SHADOW_LIVE_ACCURACY.labels(*labels).set(entry["live_accuracy"])
