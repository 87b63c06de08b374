"""What the monitor reasons about: predicted rows, labels, and the two joined.

These are plain values, independent of Kafka and protobuf. Between the monitor's own
stages they travel as the protobuf messages of ``protos/mlops/v1/monitor.proto``
(:mod:`services.monitor.internal`).

They are values that nothing changes once built, but not frozen dataclasses: a frozen
dataclass sets each field through ``object.__setattr__``, which made building a
:class:`Prediction` cost 1.1 us against 0.17 us, and the monitor builds several of these
for every row it sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.common.aliases import PRODUCTION

CLASSIFICATION = "classification"
REGRESSION = "regression"


class InvalidRecord(ValueError):
    """A record the monitor cannot use, naming the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(slots=True)
class Prediction:
    """One predicted row, as served by one model version."""

    id: str
    """The row's id: the request id for single-row requests; the join key with labels."""
    model: str
    version: int
    route: str
    """The alias that answered: production, candidate or shadow."""
    shadow: bool
    """Mirrored traffic, never returned to the client."""
    label: str
    """Canonical predicted class (classifiers); empty for regressors."""
    value: float
    """Predicted value (regressors)."""
    occurred_at: float
    """When it was served, epoch seconds."""
    features: tuple[float, ...] = ()
    feature_names: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        return CLASSIFICATION if self.label else REGRESSION

    def without_features(self) -> Prediction:
        """The same answer without its inputs: what the join keeps (the detectors have them).

        >>> Prediction("e1", "m", 1, "production", False, "1", 0.0, 10.0, (0.5,), ("a",)).without_features().features
        ()
        """
        if not self.features:
            return self
        # Built field by field: dataclasses.replace looks the fields up on every call, and
        # this runs for every row the monitor sees.
        return Prediction(
            self.id,
            self.model,
            self.version,
            self.route,
            self.shadow,
            self.label,
            self.value,
            self.occurred_at,
        )

    @property
    def served_by(self) -> tuple[str, int, str, bool]:
        """Which model version answered, and how: two predictions for one row with the
        same ``served_by`` are one prediction delivered twice."""
        return (self.model, self.version, self.route, self.shadow)

    @property
    def live(self) -> bool:
        """Answered real clients from the production alias (not shadow, not canary)."""
        return not self.shadow and self.route in ("", PRODUCTION)


@dataclass(slots=True)
class Label:
    """The ground truth for one row, arrived later (or earlier) than its prediction."""

    id: str
    label: str
    """Canonical label text (services.common.values.label_text)."""
    value: float | None
    """The label as a number when it is one (the truth for regressors)."""
    event_time: float | None
    """Event time of the labelled event, epoch seconds, when known."""
    available_at: float
    """When the label became available (ingested), epoch seconds."""


@dataclass(slots=True)
class LabelledSample:
    """A prediction joined with its label: one point of the model's error stream."""

    prediction: Prediction
    label: Label

    @property
    def error(self) -> float:
        """1.0 for a wrong class and 0.0 for a right one; the absolute error for regressors.

        >>> p = Prediction("e1", "m", 1, "production", False, "1", 0.0, 0.0)
        >>> LabelledSample(p, Label("e1", "0", 0.0, None, 5.0)).error
        1.0
        >>> r = Prediction("e2", "m", 1, "production", False, "", 2.5, 0.0)
        >>> LabelledSample(r, Label("e2", "4", 4.0, None, 5.0)).error
        1.5
        """
        prediction = self.prediction
        if prediction.task == CLASSIFICATION or self.label.value is None:
            return 0.0 if prediction.label == self.label.label else 1.0
        return abs(prediction.value - self.label.value)

    @property
    def event_time(self) -> float:
        """Event time of the sample: the labelled event's, else when it was predicted."""
        return self.label.event_time if self.label.event_time is not None else self.prediction.occurred_at

    @property
    def label_lag(self) -> float:
        """Seconds from the prediction to its label becoming available (0 if the label came first)."""
        return max(0.0, self.label.available_at - self.prediction.occurred_at)


def finite(value: float, field: str) -> float:
    """``value`` if it is a finite number, else :class:`InvalidRecord` naming ``field``."""
    if not math.isfinite(value):
        raise InvalidRecord(field, f"not a finite number: {value!r}")
    return value
