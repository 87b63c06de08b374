"""Derived features: one implementation for ingest and serving, missing rather than NaN."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.features import DerivedFeatureError, FeatureDeriver, as_datetime, check_definitions
from services.common.proto.mlops.v1.datasets_pb2 import FieldType
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature


def derive(
    function: str, inputs: list[str], row: dict[str, object], boundaries: list[float] | None = None
) -> float | None:
    feature = DerivedFeature(name="out", function=function, inputs=inputs, boundaries=boundaries or [])
    return FeatureDeriver([feature]).compute(row)["out"]


def test_timestamps_in_every_accepted_form_give_the_same_hour_and_day() -> None:
    moment = datetime(2026, 11, 29, 23, 15, tzinfo=UTC)  # a Sunday
    paris = moment.astimezone(timezone(timedelta(hours=1)))
    for value in (moment, paris, paris.isoformat(), "2026-11-29T23:15:00Z", moment.timestamp()):
        assert derive("hour_of_day", ["t"], {"t": value}) == 23.0
        assert derive("day_of_week", ["t"], {"t": value}) == 6.0


@pytest.mark.parametrize("value", [None, "not a time", "2026-11-29T23:15:00", True, math.nan, 1e300])
def test_a_timestamp_that_is_not_one_gives_a_missing_value(value: object) -> None:
    assert derive("hour_of_day", ["t"], {"t": value}) is None


def test_ratio_is_missing_where_it_is_undefined() -> None:
    assert derive("ratio", ["a", "b"], {"a": 3, "b": 2}) == 1.5
    assert derive("ratio", ["a", "b"], {"a": 3, "b": 0}) is None
    assert derive("ratio", ["a", "b"], {"a": 3}) is None
    assert derive("ratio", ["a", "b"], {"a": 1e308, "b": 1e-308}) is None
    assert derive("ratio", ["a", "b"], {"a": True, "b": 1}) is None


def test_bucket_edges_belong_to_the_bucket_above() -> None:
    edges = [0.0, 10.0, 100.0]
    got = [derive("bucket", ["x"], {"x": x}, edges) for x in (-1, 0, 5, 10, 99.9, 100, 1e9)]
    assert got == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


def test_log1p_is_missing_outside_its_domain() -> None:
    assert derive("log1p", ["x"], {"x": math.e - 1}) == pytest.approx(1.0)
    assert derive("log1p", ["x"], {"x": -1}) is None


def test_results_come_in_declaration_order() -> None:
    deriver = FeatureDeriver(
        [
            DerivedFeature(name="z", function="log1p", inputs=["x"]),
            DerivedFeature(name="a", function="log1p", inputs=["x"]),
        ]
    )
    assert deriver.names == ["z", "a"]
    assert list(deriver.compute({"x": 1.0})) == ["z", "a"]


def test_declarations_are_checked_against_the_fields() -> None:
    types = {"t": FieldType.FIELD_TYPE_TIMESTAMP, "x": FieldType.FIELD_TYPE_NUMBER}
    check_definitions([DerivedFeature(name="h", function="hour_of_day", inputs=["t"])], types)
    with pytest.raises(DerivedFeatureError) as caught:
        check_definitions([DerivedFeature(name="h", function="hour_of_day", inputs=["x"])], types)
    assert caught.value.field == "derived[0].inputs"
    with pytest.raises(DerivedFeatureError) as caught:
        check_definitions([DerivedFeature(name="", function="log1p", inputs=["x"])], types)
    assert caught.value.field == "derived[0].name"


def test_as_datetime_refuses_naive_times() -> None:
    assert as_datetime(datetime(2026, 1, 1)) is None
    assert as_datetime(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
