"""Decoding raw records in each supported encoding, refusing the rest precisely, and
re-encoding refused events without their private values."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.common.events import IncomingRecord, encode
from services.common.proto.mlops.v1.events_pb2 import RawEvent
from services.common.proto.mlops.v1.model_pb2 import FeatureValue
from services.ingest.formats import Decoded, Encoding, decode_record, redacted_body
from services.ingest.privacy import Pseudonymizer
from services.ingest.validation import EventValidator, Reason, Rejection
from tests.unit.ingest.helpers import KEY, demo_schema, event

TOPIC = "mlops.events.raw"


def record(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> IncomingRecord:
    return IncomingRecord(TOPIC, 0, 5, b"k", value, tuple(headers or ()), 0)


def decoded(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Decoded:
    result = decode_record(record(value, headers))
    assert isinstance(result, Decoded), result
    return result


def refused(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Rejection:
    result = decode_record(record(value, headers))
    assert isinstance(result, Rejection), result
    return result


def raw_event() -> RawEvent:
    message = RawEvent(event_id="e1", entity_id="alice", dataset="demo")
    message.event_time.FromDatetime(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    message.fields["amount"].CopyFrom(FeatureValue(number_value=5))
    message.fields["email"].CopyFrom(FeatureValue(string_value="alice@example.com"))
    message.fields["vip"].CopyFrom(FeatureValue(bool_value=True))
    return message


def test_plain_json() -> None:
    result = decoded(json.dumps({"dataset": "demo", **event()}).encode())
    assert result.encoding == Encoding.JSON
    assert result.event.dataset == "demo"
    assert result.event.fields == event()


def test_cloudevent_with_a_protobuf_body() -> None:
    outgoing = encode(TOPIC, raw_event(), source="/producer", key="e1")
    result = decoded(outgoing.value, outgoing.headers)
    assert result.encoding == Encoding.CLOUDEVENT_PROTOBUF
    assert (result.event.dataset, result.event.event_id, result.event.entity_id) == ("demo", "e1", "alice")
    assert result.event.event_time == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert result.event.fields == {"amount": 5.0, "email": "alice@example.com", "vip": True}


def ce_headers(
    content_type: bytes, *, version: bytes = b"1.0", event_type: bytes = b"mlops.v1.RawEvent"
) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", version),
        ("ce_id", b"x1"),
        ("ce_source", b"/producer"),
        ("ce_type", event_type),
        ("content-type", content_type),
    ]


def structured(version: str = "1.0", event_type: str = "mlops.v1.RawEvent") -> bytes:
    envelope = {"specversion": version, "id": "x", "source": "/p", "type": event_type, "data": event()}
    return json.dumps(envelope | {"data": {"dataset": "demo", **event()}}).encode()


def test_cloudevent_with_a_json_body() -> None:
    body = json.dumps({"dataset": "demo", **event()}).encode()
    result = decoded(body, ce_headers(b"application/json; charset=utf-8"))
    assert result.encoding == Encoding.CLOUDEVENT_JSON
    assert result.event.fields == event()


def test_structured_cloudevent() -> None:
    envelope = {
        "specversion": "1.0",
        "id": "x",
        "source": "/p",
        "type": "mlops.v1.RawEvent",
        "data": {"dataset": "demo", **event()},
    }
    result = decoded(json.dumps(envelope).encode(), [("content-type", b"application/cloudevents+json")])
    assert result.encoding == Encoding.CLOUDEVENT_STRUCTURED
    assert result.event.fields == event()


@pytest.mark.parametrize(
    ("value", "headers", "reason", "field"),
    [
        (None, None, Reason.EMPTY_VALUE, ""),
        (b"", None, Reason.EMPTY_VALUE, ""),
        (b"\xff\xfe{", None, Reason.UNDECODABLE, ""),
        (b"{not json", None, Reason.UNDECODABLE, ""),
        (b"[" * 2000 + b"]" * 2000, None, Reason.UNDECODABLE, ""),
        (b"[1, 2]", None, Reason.NOT_AN_OBJECT, ""),
        (b'"text"', None, Reason.NOT_AN_OBJECT, ""),
        (b'{"event_id": "e1"}', None, Reason.MISSING_FIELD, "dataset"),
        (b'{"dataset": 5}', None, Reason.WRONG_TYPE, "dataset"),
        (b'{"dataset": ""}', None, Reason.WRONG_TYPE, "dataset"),
        (b"{}", [("ce_specversion", b"1.0")], "not_cloudevent", "ce_id"),
        (b"{}", ce_headers(b"text/plain"), "unexpected_content_type", "content-type"),
        (b"\x0a\x02", ce_headers(b"application/protobuf", event_type=b"t"), "unexpected_type", "ce_type"),
        # A body that would be stored: the envelope alone decides (these were stored before).
        (
            structured().replace(b'"1.0"', b'"0.3"'),
            [("content-type", b"application/cloudevents+json")],
            "bad_envelope",
            "specversion",
        ),
        (
            structured(event_type="com.example.order"),
            [("content-type", b"application/cloudevents+json")],
            "unexpected_type",
            "type",
        ),
        (b"{}", [("content-type", b"application/cloudevents+json")], "not_cloudevent", "specversion"),
        (
            b'{"specversion": "1.0", "id": "x", "source": "/p", "type": "mlops.v1.RawEvent", "data": [1]}',
            [("content-type", b"application/cloudevents+json")],
            Reason.NOT_AN_OBJECT,
            "data",
        ),
    ],
)
def test_undecodable_records_are_refused_precisely(
    value: bytes | None, headers: list[tuple[str, bytes]] | None, reason: str, field: str
) -> None:
    result = refused(value, headers)
    assert (result.error_class, result.field) == (reason, field)


@pytest.mark.parametrize("content_type", [b"application/json", b"application/protobuf"])
@pytest.mark.parametrize(
    ("version", "event_type", "reason", "field"),
    [
        (b"0.3", b"mlops.v1.RawEvent", "bad_envelope", "ce_specversion"),
        (b"", b"mlops.v1.RawEvent", "bad_envelope", "ce_specversion"),
        (b"1.0", b"com.example.order", "unexpected_type", "ce_type"),
        (b"1.0", b"", "unexpected_type", "ce_type"),
    ],
)
def test_a_binary_cloudevent_of_another_version_or_type_is_refused_whatever_its_body(
    content_type: bytes, version: bytes, event_type: bytes, reason: str, field: str
) -> None:
    if content_type == b"application/json":
        body = json.dumps({"dataset": "demo", **event()}).encode()
    else:
        body = raw_event().SerializeToString()
    result = refused(body, ce_headers(content_type, version=version, event_type=event_type))
    assert (result.error_class, result.field) == (reason, field)


def test_a_protobuf_body_that_does_not_parse_is_refused() -> None:
    outgoing = encode(TOPIC, raw_event(), source="/producer", key="e1")
    result = refused(b"\xff\xff\xff garbage", outgoing.headers)
    assert result.error_class == "decode_error"


def test_a_raw_event_without_a_dataset_is_refused() -> None:
    message = raw_event()
    message.dataset = ""
    outgoing = encode(TOPIC, message, source="/producer", key="e1")
    result = refused(outgoing.value, outgoing.headers)
    assert (result.error_class, result.field) == (Reason.MISSING_FIELD, "dataset")


@pytest.mark.parametrize(
    "encoding", [Encoding.JSON, Encoding.CLOUDEVENT_PROTOBUF, Encoding.CLOUDEVENT_STRUCTURED]
)
def test_redacted_bodies_keep_the_encoding_but_not_the_private_values(encoding: str) -> None:
    pseudonymizer = Pseudonymizer(KEY, "1")
    validator = EventValidator(demo_schema(), pseudonymizer, 3600)
    if encoding == Encoding.CLOUDEVENT_PROTOBUF:
        outgoing = encode(TOPIC, raw_event(), source="/producer", key="e1")
        original = decoded(outgoing.value, outgoing.headers)
    elif encoding == Encoding.JSON:
        original = decoded(json.dumps({"dataset": "demo", **event()}).encode())
    else:
        envelope = {
            "specversion": "1.0",
            "id": "x",
            "source": "/p",
            "type": "mlops.v1.RawEvent",
            "data": {"dataset": "demo", **event()},
        }
        original = decoded(json.dumps(envelope).encode(), [("content-type", b"application/cloudevents+json")])
    validator.validate(original.event, datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    body = redacted_body(original, validator.redact, validator.redact_value, validator.entity_is_private)
    assert b"alice" not in body
    if encoding == Encoding.CLOUDEVENT_PROTOBUF:
        message = RawEvent.FromString(body)
        assert message.entity_id == pseudonymizer("alice")
        assert message.fields["email"].string_value == pseudonymizer("alice@example.com")
        assert message.fields["amount"].number_value == 5.0
    else:
        text = json.loads(body)
        fields = text["data"] if encoding == Encoding.CLOUDEVENT_STRUCTURED else text
        assert fields["email"] == pseudonymizer("alice@example.com")
        assert fields["user"] == pseudonymizer("alice")
        assert fields["amount"] == 50
