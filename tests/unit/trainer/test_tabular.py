"""Rows become matrices the same way for training, evaluation and serving."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common.proto.mlops.v1.model_pb2 import FeatureValue, Task
from services.trainer.errors import DataError
from services.trainer.tabular import (
    Feature,
    FeatureKind,
    build_table,
    feature_matrix,
    target_vector,
    time_ordered,
)
from tests.unit.trainer import synthetic

NUMERIC = Feature("f0", FeatureKind.NUMERIC)
FLAG = Feature("flag", FeatureKind.NUMERIC)
COLOR = Feature("color", FeatureKind.CATEGORICAL)


def test_numeric_features_give_a_float_matrix_with_nan_for_missing_and_flags_as_numbers() -> None:
    rows = synthetic.rows(3)
    del rows[1].features["f0"]
    rows[2].features["f0"].number_value = math.inf
    matrix = feature_matrix(rows, [NUMERIC, FLAG])
    assert matrix.dtype == np.float64
    assert matrix[0, 0] == rows[0].features["f0"].number_value
    assert math.isnan(matrix[1, 0]) and math.isnan(matrix[2, 0])
    assert matrix[:, 1].tolist() == [0.0, 1.0, 0.0]


def test_categories_make_an_object_matrix_in_feature_order() -> None:
    rows = synthetic.rows(2)
    del rows[1].features["color"]
    matrix = feature_matrix(rows, [COLOR, NUMERIC])
    assert matrix.dtype == object
    assert matrix[0, 0] == rows[0].features["color"].string_value
    assert isinstance(matrix[1, 0], float) and math.isnan(matrix[1, 0])
    assert matrix[0, 1] == rows[0].features["f0"].number_value


def test_text_in_a_numeric_feature_is_a_data_error_naming_event_and_field() -> None:
    rows = synthetic.rows(2)
    rows[1].features["f0"].CopyFrom(FeatureValue(string_value="twelve"))
    with pytest.raises(DataError, match="event 'e0-1' has text 'twelve' in numeric feature 'f0'") as caught:
        feature_matrix(rows, [NUMERIC])
    assert caught.value.field == "f0"


def test_class_labels_are_canonical_texts() -> None:
    rows = synthetic.rows(3)
    rows[0].label.CopyFrom(FeatureValue(number_value=1.0))
    rows[1].label.CopyFrom(FeatureValue(string_value="1"))
    rows[2].label.CopyFrom(FeatureValue(bool_value=True))
    assert target_vector(rows, Task.TASK_CLASSIFICATION, "label").tolist() == ["1", "1", "true"]


def test_regression_refuses_text_labels() -> None:
    rows = synthetic.rows(2)
    rows[1].label.CopyFrom(FeatureValue(string_value="high"))
    with pytest.raises(DataError, match="regression needs numbers"):
        target_vector(rows, Task.TASK_REGRESSION, "label")


def test_tables_are_time_ordered_and_leave_unlabelled_rows_out() -> None:
    rows = synthetic.rows(5)
    rows[2].ClearField("label")
    table = build_table(list(reversed(rows)), [NUMERIC], Task.TASK_CLASSIFICATION, "label")
    assert table.event_ids == ("e0-0", "e0-1", "e0-3", "e0-4")
    assert [r.event_id for r in time_ordered(list(reversed(rows)))] == [r.event_id for r in rows]
