"""One PredictionRecord per request, in the platform's envelope, with every row's answer."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.events import IncomingRecord, OutgoingRecord, decode, encode
from services.common.proto.mlops.v1 import events_pb2
from services.serving.events import PredictionLog, encode_rows
from services.serving.models import ModelManager
from services.serving.predictor import FeatureBatch
from tests.unit.serving.conftest import Fitted
from tests.unit.serving.test_models import MemoryRegistry


class Collected:
    def __init__(self) -> None:
        self.records: list[OutgoingRecord] = []

    def offer(self, record: OutgoingRecord) -> None:
        self.records.append(record)


def opened(record: OutgoingRecord) -> events_pb2.PredictionRecord:
    incoming = IncomingRecord(record.topic, 0, 0, record.key, record.value, tuple(record.headers), 0)
    return decode(incoming, events_pb2.PredictionRecord).message


async def test_records_carry_version_route_rows_and_open_like_any_envelope(classifier: Fitted) -> None:
    registry = MemoryRegistry()
    registry.add("iris", 4, classifier)
    registry.alias("iris", "production", 4)
    manager = ModelManager(registry)
    await manager.sync_all()
    version = manager.route("iris").target
    sink = Collected()
    log = PredictionLog(sink, "p.predictions")
    X = classifier.X[:3]
    outputs = version.predictor.predict(X)
    log.record(
        request_id="req",
        version=version,
        route="candidate",
        shadow=False,
        batch=FeatureBatch(X),
        outputs=outputs,
        latency_seconds=0.0025,
    )
    log.record(
        request_id="one",
        version=version,
        route="shadow",
        shadow=True,
        batch=FeatureBatch(X[:1], row_ids=("event-9",)),
        outputs={k: v[:1] for k, v in outputs.items()},
        latency_seconds=0.001,
    )
    first, second = sink.records
    assert (first.topic, first.key) == ("p.predictions", b"req")
    record = opened(first)
    assert (record.model_name, record.model_version, record.route, record.shadow) == (
        "iris",
        4,
        "candidate",
        False,
    )
    assert record.latency_us == 2500 and record.occurred_at.seconds > 0
    assert list(record.feature_names) == ["f0", "f1", "f2", "f3"]
    assert [r.id for r in record.rows] == ["req/0", "req/1", "req/2"]
    np.testing.assert_allclose([list(r.features) for r in record.rows], X)
    np.testing.assert_allclose([list(r.probabilities) for r in record.rows], outputs["probabilities"])
    assert [r.label for r in record.rows] == outputs["label"].tolist()
    shadow = opened(second)
    assert shadow.shadow and shadow.route == "shadow" and [r.id for r in shadow.rows] == ["event-9"]

    # The hot-path envelope is the one encode() writes, but for its own id and time.
    headers = dict(first.headers)
    reference = encode(
        "p.predictions",
        record,
        source="/mlops/serving",
        key="req",
        event_id=headers["ce_id"].decode(),
        time=decode(
            IncomingRecord("p", 0, 0, first.key, first.value, tuple(first.headers), 0),
            events_pb2.PredictionRecord,
        ).time,
    )
    assert first == reference


def reference_rows(
    request_id: str,
    row_ids: list[str] | None,
    features: np.ndarray,
    probabilities: np.ndarray | None,
    labels: np.ndarray | None,
    values: np.ndarray | None,
) -> bytes:
    """What protobuf itself writes for the same rows."""
    record = events_pb2.PredictionRecord()
    for i in range(features.shape[0]):
        row = record.rows.add(
            id=row_ids[i] if row_ids else (request_id if len(features) == 1 else f"{request_id}/{i}")
        )
        row.features.extend(features[i].tolist())
        if probabilities is not None:
            row.probabilities.extend(probabilities[i].tolist())
        if labels is not None:
            row.label = labels[i]
        if values is not None:
            row.value = float(values[i])
    return record.SerializeToString()


@pytest.mark.parametrize(
    "case",
    ["one row", "classifier batch", "named rows", "regression", "text categories", "wide and long"],
)
def test_rows_are_written_byte_for_byte_as_protobuf_writes_them(case: str) -> None:
    rng = np.random.default_rng(3)
    row_ids: list[str] | None = None
    probabilities = labels = values = None
    request_id = "req-\u00e9"
    if case == "one row":
        features = rng.normal(size=(1, 4))
        probabilities = rng.random((1, 2))
        labels = np.array(["1"], dtype=object)
    elif case == "classifier batch":
        features = rng.normal(size=(64, 20))
        probabilities = rng.random((64, 3))
        labels = np.array(["a", "bb", "a"] * 21 + [""], dtype=object)
    elif case == "named rows":
        features = rng.normal(size=(3, 2))
        row_ids = ["e1", "", "\u4e8b\u4ef6"]
        probabilities = rng.random((3, 2))
        labels = np.array(["x", "y", "x"], dtype=object)
    elif case == "regression":
        features = rng.normal(size=(4, 3))
        values = np.array([1.5, 0.0, -2.25, 1e300])
    elif case == "text categories":
        features = np.array([[0.5, np.nan], [np.inf, np.nan]])
        probabilities = rng.random((2, 2))
        labels = np.array(["no", "yes"], dtype=object)
    else:
        features = rng.normal(size=(2, 300))
        request_id = "r" * 300
        probabilities = rng.random((2, 2))
        labels = np.array(["0", "1"], dtype=object)
    ours = encode_rows(request_id, row_ids, features, probabilities, labels, values)
    assert ours == reference_rows(request_id, row_ids, features, probabilities, labels, values)
