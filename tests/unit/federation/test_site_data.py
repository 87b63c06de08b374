"""A site's file: read, checked, split the same way every round."""

from __future__ import annotations

import doctest
import io
from pathlib import Path

import numpy as np
import pytest

from services.federation.site import data
from services.federation.site.data import DataError, load, read_rows

FEATURES = ("a", "b")
CLASSES = ("no", "yes")


def test_doctests() -> None:
    assert doctest.testmod(data).failed == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the file is empty"),
        ("a,b,label\n", "no rows"),
        ("a,label\n1,yes\n", "no column(s) b"),
        ("a,b,label\n1,x,yes\n", "line 2: b is 'x', not a number"),
        ("a,b,label\n1,nan,yes\n", "line 2: b is not a finite number"),
        ("a,b,label\n1,2,maybe\n", "line 2: label 'maybe' is not one of the classes"),
        ("a,b,label\n1,2,yes\n1,2\n", "line 3: 2 fields, the header has 3"),
    ],
)
def test_a_file_the_federation_cannot_use_is_refused_with_the_line(text: str, reason: str) -> None:
    with pytest.raises(DataError) as caught:
        read_rows(io.StringIO(text), FEATURES, "label", CLASSES)
    assert reason in str(caught.value)


def test_columns_are_taken_by_name_in_the_specs_order(tmp_path: Path) -> None:
    rows = read_rows(io.StringIO("label,b,extra,a\nyes,2,z,1\n"), FEATURES, "label", CLASSES)
    assert rows.X.tolist() == [[1.0, 2.0]]


def test_the_split_is_disjoint_seeded_and_keeps_one_row_each_side(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    lines = ["a,b,label"] + [f"{i},{-i},{'yes' if i % 2 else 'no'}" for i in range(50)]
    path.write_text("\n".join(lines) + "\n")
    first = load(path, FEATURES, "label", CLASSES, eval_fraction=0.2, seed=3)
    again = load(path, FEATURES, "label", CLASSES, eval_fraction=0.2, seed=3)
    assert len(first.evaluation) == 10 and len(first.train) == 40
    np.testing.assert_array_equal(first.train.X, again.train.X)
    seen = {row[0] for row in first.train.X} | {row[0] for row in first.evaluation.X}
    assert len(seen) == 50
    path.write_text("a,b,label\n1,2,yes\n")
    with pytest.raises(DataError, match="at least two rows"):
        load(path, FEATURES, "label", CLASSES, eval_fraction=0.2, seed=3)
