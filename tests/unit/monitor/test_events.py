"""What arrives from Kafka is checked field by field; what leaves carries what the
trainer and operators need."""

from __future__ import annotations

import math

import pytest
from google.protobuf.message import Message

from services.common.events import EnvelopeError, IncomingRecord, decode, encode
from services.common.proto.mlops.v1 import events_pb2, model_pb2
from services.monitor import internal
from services.monitor.detectors import Change
from services.monitor.drift import Drift
from services.monitor.events import (
    TrainOutcome,
    drift_record,
    label_from,
    live_version_from,
    predictions_from,
    train_outcome_from,
    train_request_record,
)
from services.monitor.records import InvalidRecord
from services.monitor.retrain import RetrainRequest


def incoming(topic: str, message: Message, timestamp_ms: int = 1_700_000_000_000) -> IncomingRecord:
    out = encode(topic, message, source="/test", key="k")
    return IncomingRecord(topic, 0, 7, out.key, out.value, tuple(out.headers), timestamp_ms)


def record(**fields: object) -> events_pb2.PredictionRecord:
    base: dict[str, object] = {
        "request_id": "r1",
        "model_name": "churn",
        "model_version": 3,
        "route": "production",
        "rows": [events_pb2.PredictedRow(id="r1", features=[1.0, 2.0], probabilities=[0.2, 0.8], label="1")],
    }
    base.update(fields)
    return events_pb2.PredictionRecord(**base)  # type: ignore[arg-type]


def test_a_prediction_record_becomes_one_prediction_per_row() -> None:
    message = record(
        request_id="batch",
        feature_names=["a", "b"],
        rows=[
            events_pb2.PredictedRow(id="batch/0", features=[1.0, 2.0], label="1"),
            events_pb2.PredictedRow(id="batch/1", features=[3.0, math.nan], label="0"),
        ],
    )
    message.occurred_at.FromSeconds(1_800_000_000)
    rows = [internal.prediction(m) for m in predictions_from(incoming("p", message))]
    assert [(r.id, r.label, r.task) for r in rows] == [
        ("batch/0", "1", "classification"),
        ("batch/1", "0", "classification"),
    ]
    assert rows[0].occurred_at == 1_800_000_000
    assert rows[0].model == "churn" and rows[0].version == 3 and rows[0].live


def test_a_single_row_without_an_id_takes_the_request_id_and_the_record_time() -> None:
    rows = [
        internal.prediction(m)
        for m in predictions_from(
            incoming("p", record(rows=[events_pb2.PredictedRow(features=[1.0, 2.0], value=2.5)]))
        )
    ]
    assert rows[0].id == "r1"
    assert rows[0].task == "regression" and rows[0].value == 2.5
    assert rows[0].occurred_at == 1_700_000_000.0


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (record(model_name=""), "model_name"),
        (record(model_name="../etc"), "model_name"),
        (record(model_version=0), "model_version"),
        (record(model_version=-2), "model_version"),
        (record(rows=[]), "rows"),
        (record(rows=[events_pb2.PredictedRow(id="a"), events_pb2.PredictedRow(id="")]), "rows[1].id"),
        (record(rows=[events_pb2.PredictedRow(id="x" * 600)]), "rows[0].id"),
        (
            record(feature_names=["a", "b"], rows=[events_pb2.PredictedRow(id="a", features=[1.0])]),
            "rows[0].features",
        ),
        (record(rows=[events_pb2.PredictedRow(id="a", value=math.inf)]), "rows[0].value"),
        (record(rows=[events_pb2.PredictedRow(id="a", probabilities=[1.5])]), "rows[0].probabilities"),
        (record(rows=[events_pb2.PredictedRow(id="a", probabilities=[math.nan])]), "rows[0].probabilities"),
    ],
)
def test_bad_prediction_records_are_refused_naming_the_field(
    message: events_pb2.PredictionRecord, field: str
) -> None:
    with pytest.raises(InvalidRecord) as error:
        predictions_from(incoming("p", message))
    assert error.value.field == field


def test_a_record_of_another_kind_is_refused_before_parsing() -> None:
    with pytest.raises(EnvelopeError) as error:
        predictions_from(incoming("p", events_pb2.LabelRecord(event_id="e")))
    assert error.value.error_class == "unexpected_type"


def test_labels_keep_their_text_number_and_times() -> None:
    message = events_pb2.LabelRecord(event_id="e1", label=model_pb2.FeatureValue(number_value=1.0))
    message.event_time.FromSeconds(100)
    message.ingested_at.FromSeconds(160)
    label = internal.label(label_from(incoming("l", message)))
    assert (label.id, label.label, label.value, label.event_time, label.available_at) == (
        "e1",
        "1",
        1.0,
        100.0,
        160.0,
    )
    text = internal.label(
        label_from(
            incoming(
                "l", events_pb2.LabelRecord(event_id="e2", label=model_pb2.FeatureValue(string_value="cat"))
            )
        )
    )
    assert (text.label, text.value, text.event_time, text.available_at) == (
        "cat",
        None,
        None,
        1_700_000_000.0,
    )


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (events_pb2.LabelRecord(label=model_pb2.FeatureValue(number_value=1.0)), "event_id"),
        (events_pb2.LabelRecord(event_id="e1"), "label"),
        (events_pb2.LabelRecord(event_id="e1", label=model_pb2.FeatureValue()), "label"),
        (events_pb2.LabelRecord(event_id="e1", label=model_pb2.FeatureValue(number_value=math.nan)), "label"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(message: events_pb2.LabelRecord, field: str) -> None:
    with pytest.raises(InvalidRecord) as error:
        label_from(incoming("l", message))
    assert error.value.field == field


def test_only_production_alias_moves_make_a_version_live() -> None:
    def event(**fields: object) -> IncomingRecord:
        return incoming("e", events_pb2.ModelEvent(**fields))  # type: ignore[arg-type]

    alias = events_pb2.MODEL_EVENT_TYPE_ALIAS_SET
    assert live_version_from(event(type=alias, model_name="churn", version=4, alias="production")) == (
        "churn",
        4,
    )
    assert live_version_from(event(type=alias, model_name="churn", version=4, alias="staging")) is None
    assert (
        live_version_from(
            event(type=events_pb2.MODEL_EVENT_TYPE_VERSION_CREATED, model_name="churn", version=4)
        )
        is None
    )
    with pytest.raises(InvalidRecord, match="version"):
        live_version_from(event(type=alias, model_name="churn", version=0, alias="production"))


def test_a_drift_event_says_what_fired_where_and_since_when() -> None:
    change = Change(
        sample_index=3123, window_size=400, statistic=0.3, reference_statistic=0.1, onset_time=1_800_000_100.5
    )
    out = drift_record(
        "t.drift", Drift("d1", "churn", 3, "concept", "ADWIN", "", change, detected_at=1_800_000_500.0)
    )
    assert out.key == b"churn"
    envelope = decode(
        IncomingRecord(out.topic, 0, 0, out.key, out.value, tuple(out.headers), 0), events_pb2.DriftEvent
    )
    message = envelope.message
    assert envelope.id == "d1" == message.event_id
    assert message.kind == events_pb2.DRIFT_KIND_CONCEPT and message.detector == "ADWIN"
    assert (message.model_name, message.model_version, message.sample_index, message.window_size) == (
        "churn",
        3,
        3123,
        400,
    )
    assert message.onset_time.ToNanoseconds() == 1_800_000_100_500_000_000


def test_a_train_request_asks_for_the_production_spec_on_data_since_the_onset() -> None:
    request = RetrainRequest(
        "churn", 3, "drift:churn:ep1", "d1", onset_time=1_800_000_100.0, requested_at=1_800_000_600.0
    )
    out = train_request_record("t.train.requests", request)
    assert out.key == b"churn"
    message = decode(
        IncomingRecord(out.topic, 0, 0, out.key, out.value, tuple(out.headers), 0), events_pb2.TrainRequest
    ).message
    assert message.trigger == events_pb2.TRAIN_TRIGGER_DRIFT
    assert (message.model_name, message.parent_version, message.drift_event_id) == ("churn", 3, "d1")
    assert message.idempotency_key == "drift:churn:ep1"
    assert message.window.start_time.seconds == 1_800_000_100 and message.window.dataset == ""
    assert not message.HasField("spec") and message.requested_by == "service:monitor"


def result(**fields: object) -> events_pb2.TrainResult:
    base: dict[str, object] = {
        "request_id": "req",
        "model_name": "churn",
        "idempotency_key": "drift:churn:ep",
        "status": events_pb2.TRAIN_STATUS_GATES_FAILED,
        "gates": [
            model_pb2.GateResult(name="min_metric", passed=False, detail="0.61 < 0.75"),
            model_pb2.GateResult(name="max_regression", passed=True),
            model_pb2.GateResult(name="noise", passed=False),
        ],
    }
    base.update(fields)
    return events_pb2.TrainResult(**base)  # type: ignore[arg-type]


def test_the_outcome_of_a_retrain_the_monitor_asked_for_is_read_with_why() -> None:
    failed = train_outcome_from(incoming("p.train.results", result()))
    assert failed == TrainOutcome(
        "churn", "drift:churn:ep", "gates_failed", "gates failed: min_metric (0.61 < 0.75), noise"
    )
    broken = train_outcome_from(
        incoming(
            "p.train.results", result(status=events_pb2.TRAIN_STATUS_FAILED, error="too few rows", gates=[])
        )
    )
    assert broken is not None and (broken.outcome, broken.detail) == ("failed", "too few rows")
    registered = train_outcome_from(
        incoming("p.train.results", result(status=events_pb2.TRAIN_STATUS_REGISTERED, version=4, gates=[]))
    )
    assert registered is not None and (registered.outcome, registered.detail) == (
        "registered",
        "version 4 registered",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"status": events_pb2.TRAIN_STATUS_PROGRESS},
        {"status": events_pb2.TRAIN_STATUS_STARTED},
        {"status": events_pb2.TRAIN_STATUS_DUPLICATE},
        {"idempotency_key": "initial-churn"},  # not the monitor's request
    ],
)
def test_other_results_are_not_the_monitors_business(fields: dict[str, object]) -> None:
    assert train_outcome_from(incoming("p.train.results", result(**fields))) is None


def test_a_result_naming_no_model_is_refused() -> None:
    with pytest.raises(InvalidRecord) as refused:
        train_outcome_from(incoming("p.train.results", result(model_name="no spaces allowed")))
    assert refused.value.field == "model_name"
