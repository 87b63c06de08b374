"""Stored rows to the matrices scikit-learn trains on, the same way for training,
evaluation and the production model being challenged.

A feature matrix has one column per feature, in the spec's order (the order written
into the version's signature as ``feature_names``). It is ``float64`` when every
feature is numeric, and ``object`` otherwise: numbers as floats, categories as their
text, missing cells as ``nan`` in both cases. Serving builds the same array from a
request, so the pipeline sees exactly what it was evaluated on.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import FeatureValue, Task
from services.common.values import label_text
from services.trainer.errors import DataError


class FeatureKind(enum.StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind


@dataclass(frozen=True)
class Table:
    """A window as arrays, oldest row first."""

    features: tuple[Feature, ...]
    X: np.ndarray
    y: np.ndarray
    event_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.event_ids)

    def rows(self, index: slice | np.ndarray) -> Table:
        """The rows at ``index`` (a slice or an index array), as a table."""
        ids = np.asarray(self.event_ids, dtype=object)[index]
        return Table(self.features, self.X[index], self.y[index], tuple(ids))

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def time_ordered(rows: Sequence[FeatureRow]) -> list[FeatureRow]:
    """Rows by event time, then event id, so that ties never depend on read order."""
    return sorted(rows, key=lambda r: (r.event_time.seconds, r.event_time.nanos, r.event_id))


def _number(value: FeatureValue, feature: str, event_id: str) -> float:
    kind = value.WhichOneof("kind")
    if kind is None:
        return math.nan
    if kind == "number_value":
        number = value.number_value
        return number if math.isfinite(number) else math.nan
    if kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    raise DataError(
        f"event {event_id!r} has text {value.string_value!r} in numeric feature {feature!r}", field=feature
    )


def _category(value: FeatureValue) -> object:
    if value.WhichOneof("kind") is None:
        return math.nan
    return label_text(value)


def feature_matrix(rows: Sequence[FeatureRow], features: Sequence[Feature]) -> np.ndarray:
    """The feature matrix of ``rows`` (see the module docstring for its layout)."""
    categorical = any(f.kind is FeatureKind.CATEGORICAL for f in features)
    numeric = [f.kind is FeatureKind.NUMERIC for f in features]
    names = [f.name for f in features]
    cells: list[list[object]] = []
    for row in rows:
        values = row.features
        cells.append(
            [
                math.nan
                if name not in values
                else _number(values[name], name, row.event_id)
                if is_numeric
                else _category(values[name])
                for name, is_numeric in zip(names, numeric, strict=True)
            ]
        )
    dtype = object if categorical else np.float64
    if not cells:
        return np.empty((0, len(features)), dtype=dtype)
    matrix = np.empty((len(cells), len(features)), dtype=dtype)
    matrix[:] = cells
    return matrix


def target_vector(rows: Sequence[FeatureRow], task: Task.ValueType, target: str) -> np.ndarray:
    """Labels as canonical class texts (classification) or floats (regression)."""
    if task == Task.TASK_CLASSIFICATION:
        return np.array([label_text(row.label) for row in rows], dtype=object)
    values = np.empty(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        kind = row.label.WhichOneof("kind")
        if kind == "string_value":
            raise DataError(
                f"event {row.event_id!r} has text label {row.label.string_value!r}; regression needs numbers",
                field=target,
            )
        values[i] = _number(row.label, target, row.event_id)
    if not np.all(np.isfinite(values)):
        bad = rows[int(np.flatnonzero(~np.isfinite(values))[0])].event_id
        raise DataError(f"event {bad!r} has no finite label for regression", field=target)
    return values


def build_table(
    rows: Sequence[FeatureRow], features: Sequence[Feature], task: Task.ValueType, target: str
) -> Table:
    """The labelled rows of a window as a time-ordered table; unlabelled rows are left out."""
    labelled = [r for r in time_ordered(rows) if r.HasField("label") and r.label.WhichOneof("kind")]
    return Table(
        features=tuple(features),
        X=feature_matrix(labelled, features),
        y=target_vector(labelled, task, target),
        event_ids=tuple(r.event_id for r in labelled),
    )
