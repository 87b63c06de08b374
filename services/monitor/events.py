"""Translation between the platform's Kafka messages and the monitor's own values.

Everything that arrives is checked here, field by field: a record that is not what it
claims to be raises :class:`~services.monitor.records.InvalidRecord` naming the field,
and goes to the dead-letter topic instead of into a detector.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.aliases import PRODUCTION
from services.common.events import IncomingRecord, OutgoingRecord, decode, encode
from services.common.proto.mlops.v1 import events_pb2, model_pb2, monitor_pb2
from services.common.values import from_feature_value, label_text
from services.monitor.drift import CONCEPT, DATA, PREDICTION, Drift
from services.monitor.records import InvalidRecord, finite
from services.monitor.retrain import RetrainRequest

SOURCE = "/mlops/monitor"
REQUESTED_BY = "service:monitor"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_ID_LENGTH = 512
MAX_NAME_LENGTH = 128
MAX_ROWS = 100_000
DRIFT_KINDS = {
    CONCEPT: events_pb2.DRIFT_KIND_CONCEPT,
    DATA: events_pb2.DRIFT_KIND_DATA,
    PREDICTION: events_pb2.DRIFT_KIND_PREDICTION,
}


def _seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def _timestamp(seconds: float) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromNanoseconds(int(seconds * 1e9))
    return timestamp


def _check_id(value: str, field: str) -> str:
    if not value:
        raise InvalidRecord(field, "empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRecord(field, f"longer than {MAX_ID_LENGTH} characters")
    return value


def predictions_from(record: IncomingRecord) -> list[monitor_pb2.MonitoredPrediction]:
    """The rows of a ``PredictionRecord``, each checked, as the join topic carries them.

    Built as the monitor's own message straight away: the route stage only checks and
    re-keys a row, and a :class:`~services.monitor.records.Prediction` in between cost as
    much again as the checks.
    """
    message = decode(record, events_pb2.PredictionRecord).message
    if not MODEL_NAME.match(message.model_name):
        raise InvalidRecord("model_name", f"not a model name: {message.model_name[:140]!r}")
    if message.model_version <= 0:
        raise InvalidRecord("model_version", f"must be positive, got {message.model_version}")
    rows = message.rows
    if not rows:
        raise InvalidRecord("rows", "no rows")
    if len(rows) > MAX_ROWS:
        raise InvalidRecord("rows", f"more than {MAX_ROWS} rows")
    occurred_at = (
        _seconds(message.occurred_at) if message.HasField("occurred_at") else record.timestamp_ms / 1000
    )
    names = message.feature_names
    width = len(names)
    for index, name in enumerate(names):
        if not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidRecord(f"feature_names[{index}]", f"must be 1 to {MAX_NAME_LENGTH} characters")
    predictions = []
    for index, row in enumerate(rows):
        row_id = row.id or (message.request_id if len(rows) == 1 else "")
        _check_id(row_id, f"rows[{index}].id")
        if width and len(row.features) != width:
            raise InvalidRecord(
                f"rows[{index}].features", f"{len(row.features)} values for {width} feature names"
            )
        for p in row.probabilities:
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise InvalidRecord(f"rows[{index}].probabilities", f"not a probability: {p!r}")
        prediction = monitor_pb2.MonitoredPrediction(
            id=row_id,
            model=message.model_name,
            version=message.model_version,
            route=message.route,
            shadow=message.shadow,
            label=row.label,
            value=finite(row.value, f"rows[{index}].value"),
            occurred_at=occurred_at,
        )
        prediction.features.MergeFrom(row.features)
        if width:
            prediction.feature_names.MergeFrom(names)
        predictions.append(prediction)
    return predictions


def label_from(record: IncomingRecord) -> monitor_pb2.MonitoredLabel:
    """The label of a ``LabelRecord``, checked, as the join topic carries it."""
    message = decode(record, events_pb2.LabelRecord).message
    _check_id(message.event_id, "event_id")
    if not message.HasField("label") or message.label.WhichOneof("kind") is None:
        raise InvalidRecord("label", "missing")
    value = from_feature_value(message.label)
    label = monitor_pb2.MonitoredLabel(
        id=message.event_id,
        label=label_text(value),
        available_at=(
            _seconds(message.ingested_at) if message.HasField("ingested_at") else record.timestamp_ms / 1000
        ),
    )
    if isinstance(value, float):
        label.value = finite(value, "label")
    if message.HasField("event_time"):
        label.event_time = _seconds(message.event_time)
    return label


def live_version_from(record: IncomingRecord) -> tuple[str, int] | None:
    """``(model, version)`` when a ``ModelEvent`` moved the production alias, else None."""
    message = decode(record, events_pb2.ModelEvent).message
    if message.type != events_pb2.MODEL_EVENT_TYPE_ALIAS_SET or message.alias != PRODUCTION:
        return None
    if not MODEL_NAME.match(message.model_name):
        raise InvalidRecord("model_name", f"not a model name: {message.model_name[:140]!r}")
    if message.version <= 0:
        raise InvalidRecord("version", f"must be positive, got {message.version}")
    return message.model_name, message.version


TRAIN_OUTCOMES = {
    events_pb2.TRAIN_STATUS_REGISTERED: "registered",
    events_pb2.TRAIN_STATUS_GATES_FAILED: "gates_failed",
    events_pb2.TRAIN_STATUS_FAILED: "failed",
}
MAX_DETAIL = 300


@dataclass(frozen=True)
class TrainOutcome:
    """How a retrain the monitor asked for ended."""

    model: str
    key: str
    """The request's idempotency key (the monitor's are ``drift:<model>:...``)."""
    outcome: str
    """``registered``, ``gates_failed`` or ``failed``."""
    detail: str


def train_outcome_from(record: IncomingRecord) -> TrainOutcome | None:
    """The outcome of a ``TrainResult`` that ends a request the monitor made; None for any
    other result (progress, requests made by others)."""
    message = decode(record, events_pb2.TrainResult).message
    outcome = TRAIN_OUTCOMES.get(message.status)
    if outcome is None or not message.idempotency_key.startswith("drift:"):
        return None
    if not MODEL_NAME.match(message.model_name):
        raise InvalidRecord("model_name", f"not a model name: {message.model_name[:140]!r}")
    _check_id(message.idempotency_key, "idempotency_key")
    if outcome == "registered":
        detail = f"version {message.version} registered"
    else:
        failed = [
            f"{gate.name} ({gate.detail})" if gate.detail else gate.name
            for gate in message.gates
            if not gate.passed
        ]
        detail = message.error or ("gates failed: " + ", ".join(failed) if failed else "")
    return TrainOutcome(message.model_name, message.idempotency_key, outcome, detail[:MAX_DETAIL])


def drift_record(topic: str, drift: Drift) -> OutgoingRecord:
    change = drift.change
    message = events_pb2.DriftEvent(
        event_id=drift.id,
        model_name=drift.model,
        model_version=drift.version,
        kind=DRIFT_KINDS[drift.kind],
        detector=drift.detector,
        feature=drift.feature,
        statistic=change.statistic,
        reference_statistic=change.reference_statistic,
        window_size=change.window_size,
        sample_index=change.sample_index,
        detected_at=_timestamp(drift.detected_at),
        onset_time=_timestamp(change.onset_time),
    )
    return encode(topic, message, source=SOURCE, key=drift.model, event_id=drift.id)


def train_request_record(topic: str, request: RetrainRequest) -> OutgoingRecord:
    """A ``TrainRequest`` for the production spec on data since the onset (the trainer
    fills in the spec's dataset because ``window.dataset`` is left empty)."""
    request_id = uuid.uuid4().hex
    message = events_pb2.TrainRequest(
        request_id=request_id,
        idempotency_key=request.idempotency_key,
        model_name=request.model,
        trigger=events_pb2.TRAIN_TRIGGER_DRIFT,
        window=model_pb2.DataWindow(start_time=_timestamp(request.onset_time)),
        parent_version=request.parent_version,
        drift_event_id=request.drift_event_id,
        requested_at=_timestamp(request.requested_at),
        requested_by=REQUESTED_BY,
    )
    return encode(topic, message, source=SOURCE, key=request.model, event_id=request_id)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def drift_alert(drift: Drift) -> dict[str, Any]:
    """What a webhook receives for a drift event."""
    change = drift.change
    return {
        "type": "drift",
        "id": drift.id,
        "model": drift.model,
        "version": drift.version,
        "kind": drift.kind,
        "detector": drift.detector,
        "feature": drift.feature,
        "statistic": change.statistic,
        "reference_statistic": change.reference_statistic,
        "window_size": change.window_size,
        "sample_index": change.sample_index,
        "onset_time": _iso(change.onset_time),
        "detected_at": _iso(drift.detected_at),
    }


def retrain_alert(request: RetrainRequest) -> dict[str, Any]:
    """What a webhook receives when the monitor asks for a retrain."""
    return {
        "type": "retrain_requested",
        "model": request.model,
        "parent_version": request.parent_version,
        "idempotency_key": request.idempotency_key,
        "drift_event_id": request.drift_event_id,
        "onset_time": _iso(request.onset_time),
        "requested_at": _iso(request.requested_at),
    }
