"""What the monitor reasons about: predicted rows, labels, and the two joined.

These are plain values, independent of Kafka and protobuf. Between the monitor's own
stages they travel as compact JSON (:func:`dumps` / :func:`loads`): the monitor's
internal topics are its own business and JSON keeps them readable with any tool.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from services.common.aliases import PRODUCTION

CLASSIFICATION = "classification"
REGRESSION = "regression"


class InvalidRecord(ValueError):
    """A record the monitor cannot use, naming the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
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

    @property
    def served_by(self) -> tuple[str, int, str, bool]:
        """Which model version answered, and how: two predictions for one row with the
        same ``served_by`` are one prediction delivered twice."""
        return (self.model, self.version, self.route, self.shadow)

    @property
    def live(self) -> bool:
        """Answered real clients from the production alias (not shadow, not canary)."""
        return not self.shadow and self.route in ("", PRODUCTION)

    def to_json(self, with_features: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "m": self.model,
            "v": self.version,
            "r": self.route,
            "s": self.shadow,
            "y": self.label,
            "x": self.value,
            "t": self.occurred_at,
        }
        if with_features and self.features:
            data["f"] = pack_floats(self.features)
            data["fn"] = self.feature_names
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(
            id=data["id"],
            model=data["m"],
            version=int(data["v"]),
            route=data["r"],
            shadow=bool(data["s"]),
            label=data["y"],
            value=float(data["x"]),
            occurred_at=float(data["t"]),
            features=_features(data.get("f", "")),
            feature_names=tuple(data.get("fn", ())),
        )


@dataclass(frozen=True, slots=True)
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

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "y": self.label, "x": self.value, "t": self.event_time, "a": self.available_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Label:
        value, event_time = data["x"], data["t"]
        return cls(
            id=data["id"],
            label=data["y"],
            value=None if value is None else float(value),
            event_time=None if event_time is None else float(event_time),
            available_at=float(data["a"]),
        )


@dataclass(frozen=True, slots=True)
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

    def to_json(self) -> dict[str, Any]:
        return {"p": self.prediction.to_json(with_features=False), "l": self.label.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelledSample:
        return cls(Prediction.from_json(data["p"]), Label.from_json(data["l"]))


def pack_floats(values: tuple[float, ...]) -> str:
    """Feature values as base64 of little-endian doubles.

    As JSON numbers they cost most of the monitor's encoding and decoding time (every
    prediction crosses two topics), and a missing value (NaN) is no JSON number at all.

    >>> unpack_floats(pack_floats((0.1, -2.0, math.inf)))
    (0.1, -2.0, inf)
    """
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode()


def unpack_floats(packed: str) -> tuple[float, ...]:
    raw = base64.b64decode(packed, validate=True)
    return struct.unpack(f"<{len(raw) // 8}d", raw)


def _features(field: str | list[float]) -> tuple[float, ...]:
    # Items written before features were packed may still wait on the internal topics.
    return tuple(field) if isinstance(field, list) else unpack_floats(field)


def dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def loads(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise InvalidRecord("value", "not a JSON object")
    return data


def finite(value: float, field: str) -> float:
    """``value`` if it is a finite number, else :class:`InvalidRecord` naming ``field``."""
    if not math.isfinite(value):
        raise InvalidRecord(field, f"not a finite number: {value!r}")
    return value
