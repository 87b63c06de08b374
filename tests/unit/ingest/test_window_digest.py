"""The canonical row encoding behind a window's content hash: what the trainer records
as lineage and the client verifies, so it must be exact, ordered and type-aware."""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.clients.datasets import WindowDigest, canonical_row
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import FeatureValue


def row(features: dict[str, FeatureValue], label: FeatureValue | None = None) -> FeatureRow:
    result = FeatureRow(
        event_id="e1",
        entity_id="u7",
        dataset="demo",
        schema_version=2,
        event_time=Timestamp(seconds=1, nanos=5),
    )
    for name, value in features.items():
        result.features[name].CopyFrom(value)
    if label is not None:
        result.label.CopyFrom(label)
    return result


def test_encoding_is_the_documented_json_line() -> None:
    encoded = canonical_row(
        row(
            {"b": FeatureValue(string_value="x"), "a": FeatureValue(number_value=0.5)},
            FeatureValue(number_value=1.0),
        )
    )
    assert encoded == b'["e1","u7",2,"1.000000005",{"a":0.5,"b":"x"},1.0]\n'


def test_feature_order_does_not_change_the_encoding() -> None:
    one = row({"a": FeatureValue(number_value=1), "b": FeatureValue(bool_value=True)})
    other = row({"b": FeatureValue(bool_value=True), "a": FeatureValue(number_value=1)})
    assert canonical_row(one) == canonical_row(other)


def test_number_text_and_flag_are_told_apart() -> None:
    encodings = {
        canonical_row(row({"x": FeatureValue(number_value=1)})),
        canonical_row(row({"x": FeatureValue(string_value="1")})),
        canonical_row(row({"x": FeatureValue(bool_value=True)})),
        canonical_row(row({})),
        canonical_row(row({}, FeatureValue(string_value=""))),
    }
    assert len(encodings) == 5


def test_digest_depends_on_row_order() -> None:
    first, second = row({"x": FeatureValue(number_value=1)}), row({"x": FeatureValue(number_value=2)})
    forward, backward = WindowDigest(), WindowDigest()
    for r in (first, second):
        forward.update(r)
    for r in (second, first):
        backward.update(r)
    assert forward.row_count == backward.row_count == 2
    assert forward.hexdigest() != backward.hexdigest()
    assert forward.hexdigest() == hashlib.sha256(canonical_row(first) + canonical_row(second)).hexdigest()
