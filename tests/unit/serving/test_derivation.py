"""One feature definition: serving derives the same values ingest stored for the same event.

The skew test runs the same events through ingest's validator (what training reads) and,
as raw request fields, through the predictor of a version whose signature the trainer
wrote for that dataset (what the model sees in serving), and compares the derived
columns value for value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from services.common.flavors.skops import SklearnRuntime
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature, EstimatorSpec, ModelSpec, Signature, Task
from services.ingest.privacy import Pseudonymizer
from services.ingest.validation import EventValidator, RawInput, ValidEvent
from services.serving.derivation import Derivation, DerivationError
from services.serving.errors import InvalidInput
from services.serving.predictor import Predictor, SignatureError
from services.serving.tensors import Tensor
from services.trainer.plan import make_plan
from services.trainer.training import signature_for
from tests.helpers.datasets import orders_schema

FEATURES = ["amount", "items", "hour", "per_item"]
SCHEMA = orders_schema("orders", version=1)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

# Offsets, fractions of seconds, midnight, a day boundary crossed by the offset, a ratio
# with no items (undefined, so missing in both) and one with items absent.
EVENTS: list[dict[str, Any]] = [
    {"ts": "2026-11-26T10:30:00Z", "amount": 50.0, "items": 4.0},
    {"ts": "2026-11-26T23:59:59.999999+00:00", "amount": 0.0, "items": 3.0},
    {"ts": "2026-11-27T01:15:00+05:30", "amount": 999.5, "items": 7.0},
    {"ts": "2026-11-26T18:00:00-08:00", "amount": 12.25, "items": 0.0},
    {"ts": "2026-02-28T00:00:00.5Z", "amount": 1.0},
]


def ingest_rows() -> list[ValidEvent]:
    validator = EventValidator(SCHEMA, Pseudonymizer(b"k" * 32, "1"), max_clock_skew_seconds=3600)
    rows = []
    for i, fields in enumerate(EVENTS):
        result = validator.validate(
            RawInput("orders", {"event_id": f"e{i}", "customer": "c", "label": "a", **fields}), NOW
        )
        assert isinstance(result, ValidEvent), result
        rows.append(result)
    return rows


def served_signature() -> tuple[Signature, LinearRegression]:
    """A version as the trainer describes it for the orders dataset, and its model."""
    spec = ModelSpec(
        model_name="orders-value",
        dataset="orders",
        features=FEATURES,
        target="label",
        task=Task.TASK_REGRESSION,
        estimators=[EstimatorSpec(family="linear_regression")],
    )
    plan = make_plan(spec, SCHEMA)
    rng = np.random.default_rng(0)
    estimator = LinearRegression().fit(rng.normal(size=(20, 4)), rng.normal(size=20))
    return signature_for(plan, estimator), estimator


def served_predictor() -> Predictor:
    signature, estimator = served_signature()
    return Predictor("orders-value", 1, SklearnRuntime(estimator), signature)


def raw_tensors(events: list[dict[str, Any]]) -> list[Tensor]:
    """The events' raw fields as a client sends them: text timestamps, numbers (NaN: absent)."""
    ts = np.array([e["ts"].encode() for e in events], dtype=object)
    amount = np.array([e["amount"] for e in events])
    items = np.array([e.get("items", np.nan) for e in events])
    return [
        Tensor("ts", "BYTES", ts.shape, ts),
        Tensor("amount", "FP64", amount.shape, amount),
        Tensor("items", "FP64", items.shape, items),
    ]


def test_the_signature_says_which_inputs_are_raw_and_which_derived() -> None:
    signature, _ = served_signature()
    assert list(signature.feature_names) == FEATURES
    assert {d.name: list(d.inputs) for d in signature.derived} == {
        "hour": ["ts"],
        "per_item": ["amount", "items"],
    }
    predictor = served_predictor()
    # What metadata lists: the raw fields, never the derived features or the matrix.
    assert [(t.name, t.datatype) for t in predictor.inputs] == [
        ("amount", "FP64"),
        ("items", "FP64"),
        ("ts", "BYTES"),
    ]
    assert predictor.matrix_input is None


def test_serving_derives_exactly_what_ingest_stored_for_the_same_events() -> None:
    stored = ingest_rows()
    predictor = served_predictor()
    batch = predictor.assemble(raw_tensors(EVENTS), max_rows=100)
    for column, name in enumerate(FEATURES):
        expected = [row.features.get(name, np.nan) for row in stored]
        served = batch.matrix[:, column].tolist()
        # Exactly equal (NaN where ingest left the feature missing), not approximately.
        np.testing.assert_array_equal(np.array(expected, dtype=np.float64), np.array(served), err_msg=name)
    hours = batch.matrix[:, FEATURES.index("hour")].tolist()
    assert hours == [10.0, 23.0, 19.0, 2.0, 0.0]  # UTC hours, whatever offset the event had


def test_epoch_seconds_give_the_same_hour_as_the_text() -> None:
    predictor = served_predictor()
    moments = [datetime.fromisoformat(e["ts"]) for e in EVENTS]
    seconds = np.array([m.timestamp() for m in moments])
    tensors = [t for t in raw_tensors(EVENTS) if t.name != "ts"] + [
        Tensor("ts", "FP64", seconds.shape, seconds)
    ]
    from_seconds = predictor.assemble(tensors, max_rows=100).matrix
    from_text = predictor.assemble(raw_tensors(EVENTS), max_rows=100).matrix
    np.testing.assert_array_equal(from_seconds, from_text)


def test_a_request_sending_a_derived_feature_itself_is_refused() -> None:
    predictor = served_predictor()
    tensors = raw_tensors(EVENTS[:1]) + [Tensor("hour", "FP64", (1,), np.array([3.0]))]
    with pytest.raises(InvalidInput, match="'hour' is a derived feature") as caught:
        predictor.assemble(tensors, max_rows=10)
    assert caught.value.field == "hour"
    # The matrix would carry derived values computed by the client: not accepted either.
    with pytest.raises(InvalidInput, match="unknown input"):
        predictor.assemble([Tensor("features", "FP64", (1, 4), np.zeros((1, 4)))], max_rows=10)


def test_a_missing_raw_field_and_a_bad_timestamp_are_named() -> None:
    predictor = served_predictor()
    without_ts = [t for t in raw_tensors(EVENTS[:1]) if t.name != "ts"]
    with pytest.raises(InvalidInput, match="missing input.*'ts'"):
        predictor.assemble(without_ts, max_rows=10)
    numbers_as_text = [
        Tensor("amount", "BYTES", (1,), np.array([b"50"], dtype=object)) if t.name == "amount" else t
        for t in raw_tensors(EVENTS[:1])
    ]
    with pytest.raises(InvalidInput, match="input 'amount'"):
        predictor.assemble(numbers_as_text, max_rows=10)


@pytest.mark.parametrize(
    ("derived", "message"),
    [
        ([DerivedFeature(name="weekday", function="day_of_week", inputs=["ts"])], "not one of"),
        ([DerivedFeature(name="amount", function="sine", inputs=["x"])], "unknown function"),
        ([DerivedFeature(name="amount", function="ratio", inputs=["x"])], "takes 2 input"),
        (
            [
                DerivedFeature(name="amount", function="log1p", inputs=["items"]),
                DerivedFeature(name="items", function="log1p", inputs=["x"]),
            ],
            "itself derived",
        ),
    ],
)
def test_a_signature_whose_derivation_cannot_run_is_refused(
    derived: list[DerivedFeature], message: str
) -> None:
    with pytest.raises(DerivationError, match=message):
        Derivation(derived, ["amount", "items"])
    signature, estimator = served_signature()
    del signature.derived[:]
    signature.derived.extend(derived)
    with pytest.raises(SignatureError, match=message):
        Predictor("m", 1, SklearnRuntime(estimator), signature)
