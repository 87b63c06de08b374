"""A site's own rows: read from its CSV file, checked, split for training and evaluation.

The file stays where it is: the site agent reads it in the site's own processes, and
nothing in this module sends anything anywhere. A file the federation cannot use is
refused with a reason naming the column or the line, before any training.

Examples
--------
>>> import io
>>> text = "a,b,label\\n0.5,1,yes\\n-1,2,no\\n3,0.25,yes\\n"
>>> rows = read_rows(io.StringIO(text), features=("a", "b"), target="label", classes=("no", "yes"))
>>> rows.X.shape, rows.y.tolist()
((3, 2), ['yes', 'no', 'yes'])
>>> read_rows(io.StringIO("a,label\\n1,yes\\n"), features=("a", "b"), target="label", classes=("no", "yes"))
Traceback (most recent call last):
...
services.federation.site.data.DataError: the file has no column(s) b
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

MAX_ROWS = 10_000_000


class DataError(ValueError):
    """The site's file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Rows:
    X: NDArray[np.float64]
    y: NDArray[Any]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class SiteData:
    """A site's rows, split once and the same way in every round (seeded)."""

    train: Rows
    evaluation: Rows


def read_rows(file: TextIO, features: Sequence[str], target: str, classes: Sequence[str]) -> Rows:
    """Rows of ``file`` (CSV with a header): the feature columns as numbers, the target as text."""
    reader = csv.reader(file)
    header = next(reader, None)
    if header is None:
        raise DataError("the file is empty")
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in (*features, target) if name not in columns]
    if missing:
        raise DataError(f"the file has no column(s) {', '.join(missing)}")
    feature_columns = [columns[name] for name in features]
    target_column = columns[target]
    known = set(classes)
    values: list[list[float]] = []
    labels: list[str] = []
    for line, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != len(header):
            raise DataError(f"line {line}: {len(record)} fields, the header has {len(header)}")
        row = []
        for name, column in zip(features, feature_columns, strict=True):
            try:
                number = float(record[column])
            except ValueError:
                raise DataError(f"line {line}: {name} is {record[column][:32]!r}, not a number") from None
            if not math.isfinite(number):
                raise DataError(f"line {line}: {name} is not a finite number")
            row.append(number)
        label = record[target_column].strip()
        if label not in known:
            raise DataError(f"line {line}: {target} {label[:32]!r} is not one of the classes {sorted(known)}")
        values.append(row)
        labels.append(label)
        if len(labels) > MAX_ROWS:
            raise DataError(f"more than {MAX_ROWS} rows")
    if not labels:
        raise DataError("the file has no rows")
    return Rows(np.array(values, dtype=np.float64).reshape(-1, len(features)), np.array(labels))


def load(
    path: Path, features: Sequence[str], target: str, classes: Sequence[str], eval_fraction: float, seed: int
) -> SiteData:
    """The site's file, split into training and evaluation rows (at least one of each)."""
    with path.open(newline="") as file:
        rows = read_rows(file, features, target, classes)
    if len(rows) < 2:
        raise DataError("a site needs at least two rows: one to train on, one to evaluate with")
    order = np.random.default_rng(seed).permutation(len(rows))
    held = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction)))
    evaluation, train = order[:held], order[held:]
    return SiteData(Rows(rows.X[train], rows.y[train]), Rows(rows.X[evaluation], rows.y[evaluation]))
