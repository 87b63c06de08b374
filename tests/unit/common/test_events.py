"""The CloudEvents envelope: interoperable with the cloudevents library both ways, and
every malformed record refused with a precise error class."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from services.common import events
from services.common.events import EnvelopeError, IncomingRecord, Topics, decode, encode
from services.common.proto.mlops.v1 import events_pb2


def incoming(
    topic: str, value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = b"k"
) -> IncomingRecord:
    return IncomingRecord(topic, 0, 7, key, value, tuple(headers), 0)


def test_round_trip_keeps_payload_key_and_attributes() -> None:
    # A payload whose bytes are valid UTF-8 must still come back as the same protobuf.
    message = events_pb2.LabelRecord(event_id="e-1", dataset="demo")
    record = encode("p.labels", message, source="/ingest", key="e-1", event_id="id-1")
    envelope = decode(
        incoming(record.topic, record.value, record.headers, record.key), events_pb2.LabelRecord
    )
    assert envelope.message == message
    assert envelope.id == "id-1"
    assert envelope.source == "/ingest"
    assert envelope.type == "mlops.v1.LabelRecord"
    assert record.key == b"e-1"
    assert dict(record.headers)["content-type"] == b"application/protobuf"


def test_the_cloudevents_library_reads_what_we_write() -> None:
    record = encode("t", events_pb2.DriftEvent(model_name="m"), source="/monitor", key="m")
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
    event = from_binary(message, JSONFormat())
    assert event.get_type() == "mlops.v1.DriftEvent"
    assert event.get_source() == "/monitor"
    assert event.get_specversion() == "1.0"


def test_we_read_what_the_cloudevents_library_writes() -> None:
    payload = events_pb2.TrainRequest(request_id="r-9", model_name="m").SerializeToString()
    event = CloudEvent(
        attributes={
            "type": "mlops.v1.TrainRequest",
            "source": "/someone-else",
            "id": "x",
            "datacontenttype": "application/protobuf",
        },
        data=payload,
    )
    message = to_binary(event, JSONFormat(), key_mapper=lambda _: b"m")
    envelope = decode(incoming("t", message.value, list(message.headers.items())), events_pb2.TrainRequest)
    assert envelope.message.request_id == "r-9"


@pytest.mark.parametrize(
    ("value", "headers", "error_class"),
    [
        (None, [], "empty_value"),
        (b"{}", [("content-type", b"application/json")], "not_cloudevent"),
        (
            b"\x0a\x01x",
            [
                ("ce_specversion", b"1.0"),
                ("ce_type", b"mlops.v1.DriftEvent"),
                ("ce_id", b"1"),
                ("ce_source", b"/s"),
            ],
            "unexpected_type",
        ),
        (
            b"\xff\xff\xff",
            [
                ("ce_specversion", b"1.0"),
                ("ce_type", b"mlops.v1.LabelRecord"),
                ("ce_id", b"1"),
                ("ce_source", b"/s"),
                ("content-type", b"application/protobuf"),
            ],
            "decode_error",
        ),
        (
            b"",
            [
                ("ce_specversion", b"1.0"),
                ("ce_type", b"mlops.v1.LabelRecord"),
                ("ce_id", b"1"),
                ("ce_source", b"/s"),
                ("content-type", b"application/json"),
            ],
            "unexpected_content_type",
        ),
        (
            b"",
            [("ce_specversion", b"1.0"), ("ce_type", b"\xff"), ("ce_id", b"1"), ("ce_source", b"/s")],
            "bad_envelope",
        ),
    ],
)
def test_malformed_records_are_refused_with_their_reason(
    value: bytes | None, headers: list[tuple[str, bytes]], error_class: str
) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(incoming("t", value, headers), events_pb2.LabelRecord)
    assert caught.value.error_class == error_class


def verdict(record: IncomingRecord) -> tuple[Any, ...]:
    try:
        envelope = decode(record, events_pb2.LabelRecord)
    except EnvelopeError as exc:
        return ("refused", exc.error_class, str(exc))
    return (
        envelope.id,
        envelope.source,
        envelope.type,
        envelope.time,
        envelope.time.tzinfo if envelope.time else None,
        envelope.message,
    )


def variant(**changes: bytes | None) -> IncomingRecord:
    record = encode(
        "t",
        events_pb2.LabelRecord(event_id="e-1"),
        source="/ingest",
        key="e-1",
        event_id="id-1",
        time=datetime(2026, 11, 26, 23, 0, 1, 250, tzinfo=UTC),
    )
    headers = dict(record.headers) | {"traceparent": b"00-x"}
    key = changes.pop("key", record.key)
    for name, value in changes.items():
        headers[name] = value  # type: ignore[assignment]
    value = headers.pop("value", record.value)
    return incoming("t", value, list(headers.items()), key)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ce_time": b"2026-11-26T23:23:25Z"},
        {"ce_time": b"2026-11-26T23:23:25.1Z"},
        {"ce_time": b"2026-11-26T24:00:00Z"},
        {"ce_time": b"2026-02-30T00:00:00Z"},
        {"ce_time": b"2026-11-26T23:23:25+01:00"},
        {"ce_time": b"yesterday"},
        {"ce_id": b""},
        {"ce_id": b"\xff"},
        {"key": b"\xff"},
        {"key": None},
        {"traceparent": b"\xff"},
        {"ce_source": b"/elsewhere"},
        {"ce_specversion": b"0.3"},
        {"value": b"\xff\xff\xff"},
    ],
)
def test_an_envelope_like_one_accepted_before_gets_the_librarys_verdict(
    changes: dict[str, bytes | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Envelopes whose attribute headers were accepted once skip the library's parse: the
    # verdict on what differs (id, time, key, other headers, payload) must not change.
    monkeypatch.setattr(events, "_ACCEPTED", set())
    library = verdict(variant(**changes))
    monkeypatch.setattr(events, "_ACCEPTED", set())
    verdict(variant())
    assert events._ACCEPTED
    assert verdict(variant(**changes)) == library


def test_every_topic_has_a_dead_letter_topic() -> None:
    topics = Topics("acme")
    names = topics.all()
    assert "acme.predictions" in names
    assert all(Topics.dlq(name) in names for name in names if not name.endswith(".dlq"))
    assert len(names) == len(set(names))
