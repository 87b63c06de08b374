"""Row-level derived features: one definition, one function, in ingest and in serving.

A dataset schema declares derived features (``DerivedFeature``: a name, a function,
its inputs). Ingest computes them for every stored row; serving computes them for
every request row from the same declarations, through the same :class:`FeatureDeriver`,
so a model never sees a feature computed one way in training and another in serving.

Only stateless, row-level functions live here. Anything that learns from data
(scaling, encoding, imputation) belongs in the model's own pipeline.

Functions
---------
``hour_of_day``
    One timestamp input: the hour in UTC, 0-23.
``day_of_week``
    One timestamp input: the day in UTC, Monday 0 to Sunday 6.
``ratio``
    Two number inputs: the first divided by the second; missing when the second is 0.
``bucket``
    One number input and strictly increasing ``boundaries``: the index of the bucket
    the value falls in, 0 below the first boundary, ``len(boundaries)`` at or above
    the last (a value equal to a boundary goes to the bucket above it).
``log1p``
    One number input: ``log(1 + x)``; missing for ``x <= -1``.

Inputs and outputs
------------------
Timestamp inputs may be aware ``datetime`` objects, ISO-8601 text with an offset, or
numbers of seconds since the Unix epoch. Every result is a float, or ``None`` when an
input is missing or the function is undefined there: a missing value, never NaN.

>>> from services.common.proto.mlops.v1.model_pb2 import DerivedFeature
>>> deriver = FeatureDeriver([
...     DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"]),
...     DerivedFeature(name="per_item", function="ratio", inputs=["amount", "items"]),
...     DerivedFeature(name="size", function="bucket", inputs=["amount"], boundaries=[10, 100]),
... ])
>>> deriver.compute({"ts": "2026-11-26T10:30:00Z", "amount": 50.0, "items": 4})
{'hour': 10.0, 'per_item': 12.5, 'size': 1.0}
>>> deriver.compute({"ts": None, "amount": 50.0, "items": 0})
{'hour': None, 'per_item': None, 'size': 1.0}
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.proto.mlops.v1.datasets_pb2 import FieldType
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature

Compute = Callable[[Mapping[str, object]], float | None]


class DerivedFeatureError(ValueError):
    """A derived-feature declaration that cannot be computed, naming where it is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_definitions(
    derived: Sequence[DerivedFeature], field_types: Mapping[str, FieldType.ValueType]
) -> None:
    """Raise :class:`DerivedFeatureError` unless every declaration can be computed.

    ``field_types`` maps the dataset's field names to their ``FieldType``. The error's
    ``field`` is the declaration's path, such as ``derived[1].inputs``.
    """
    names: set[str] = set()
    for index, feature in enumerate(derived):
        path = f"derived[{index}]"
        if not feature.name:
            raise DerivedFeatureError(f"{path}.name", "a derived feature needs a name")
        if feature.name in field_types or feature.name in names:
            raise DerivedFeatureError(
                f"{path}.name", f"{feature.name!r} is already a field or derived feature"
            )
        names.add(feature.name)
        function = FUNCTIONS.get(feature.function)
        if function is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise DerivedFeatureError(
                f"{path}.function", f"unknown function {feature.function!r}; known: {known}"
            )
        if len(feature.inputs) != len(function.input_types):
            raise DerivedFeatureError(
                f"{path}.inputs",
                f"{feature.function} takes {len(function.input_types)} input(s), got {len(feature.inputs)}",
            )
        for name, expected in zip(feature.inputs, function.input_types, strict=True):
            if name not in field_types:
                raise DerivedFeatureError(f"{path}.inputs", f"input {name!r} is not a field of the dataset")
            if field_types[name] != expected:
                raise DerivedFeatureError(
                    f"{path}.inputs", f"input {name!r} must be a {FieldType.Name(expected)} field"
                )
        boundaries = list(feature.boundaries)
        if function.takes_boundaries:
            if not boundaries:
                raise DerivedFeatureError(f"{path}.boundaries", "bucket needs at least one boundary")
            if not all(math.isfinite(b) for b in boundaries):
                raise DerivedFeatureError(f"{path}.boundaries", "boundaries must be finite")
            if any(a >= b for a, b in zip(boundaries, boundaries[1:], strict=False)):
                raise DerivedFeatureError(f"{path}.boundaries", "boundaries must be strictly increasing")
        elif boundaries:
            raise DerivedFeatureError(f"{path}.boundaries", f"{feature.function} takes no boundaries")


def as_datetime(value: object) -> datetime | None:
    """An aware UTC datetime from a datetime, ISO-8601 text or epoch seconds; None if not one."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    number = _as_number(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _hour_of_day(name: str) -> Compute:
    def compute(row: Mapping[str, object]) -> float | None:
        moment = as_datetime(row.get(name))
        return None if moment is None else float(moment.hour)

    return compute


def _day_of_week(name: str) -> Compute:
    def compute(row: Mapping[str, object]) -> float | None:
        moment = as_datetime(row.get(name))
        return None if moment is None else float(moment.weekday())

    return compute


def _ratio(numerator: str, denominator: str) -> Compute:
    def compute(row: Mapping[str, object]) -> float | None:
        top, bottom = _as_number(row.get(numerator)), _as_number(row.get(denominator))
        if top is None or bottom is None or bottom == 0:
            return None
        result = top / bottom
        return result if math.isfinite(result) else None

    return compute


def _bucket(name: str, boundaries: Sequence[float]) -> Compute:
    edges = list(boundaries)

    def compute(row: Mapping[str, object]) -> float | None:
        number = _as_number(row.get(name))
        return None if number is None else float(bisect.bisect_right(edges, number))

    return compute


def _log1p(name: str) -> Compute:
    def compute(row: Mapping[str, object]) -> float | None:
        number = _as_number(row.get(name))
        return None if number is None or number <= -1 else math.log1p(number)

    return compute


@dataclass(frozen=True)
class _Function:
    input_types: tuple[FieldType.ValueType, ...]
    compile: Callable[[DerivedFeature], Compute]
    """The row function for one declaration (its inputs and boundaries checked)."""
    takes_boundaries: bool = False


_TIMESTAMP, _NUMBER = FieldType.FIELD_TYPE_TIMESTAMP, FieldType.FIELD_TYPE_NUMBER

FUNCTIONS: dict[str, _Function] = {
    "hour_of_day": _Function((_TIMESTAMP,), lambda f: _hour_of_day(f.inputs[0])),
    "day_of_week": _Function((_TIMESTAMP,), lambda f: _day_of_week(f.inputs[0])),
    "ratio": _Function((_NUMBER, _NUMBER), lambda f: _ratio(f.inputs[0], f.inputs[1])),
    "bucket": _Function((_NUMBER,), lambda f: _bucket(f.inputs[0], f.boundaries), takes_boundaries=True),
    "log1p": _Function((_NUMBER,), lambda f: _log1p(f.inputs[0])),
}
"""Every derived-feature function by name: what it takes and how it is computed."""


def _compile(feature: DerivedFeature) -> Compute:
    function = FUNCTIONS.get(feature.function)
    if function is None:
        raise DerivedFeatureError("function", f"unknown function {feature.function!r}")
    return function.compile(feature)


class FeatureDeriver:
    """The derived features of one schema, compiled once and computed per row."""

    def __init__(self, derived: Iterable[DerivedFeature]):
        self._features = [(feature.name, _compile(feature)) for feature in derived]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._features]

    def compute(self, row: Mapping[str, object]) -> dict[str, float | None]:
        """Every derived feature of ``row`` (input values by field name), in declaration order."""
        return {name: compute(row) for name, compute in self._features}
