"""The encodings a raw event may arrive in, decoded to one shape (:class:`RawInput`).

- plain JSON: one flat object, ``"dataset"`` naming the schema (the raw-event contract);
- CloudEvents, binary mode (``ce_*`` headers) with a protobuf ``mlops.v1.RawEvent`` body
  (``content-type: application/protobuf``) or a JSON body (``application/json``);
- CloudEvents, structured mode (``content-type: application/cloudevents+json``) with
  the flat object as ``data``.

A record that cannot be decoded becomes a :class:`Rejection`. Dead letters of events
with private fields carry a re-encoded body with those fields pseudonymized
(:func:`redacted_body`): the raw value never reaches the dead-letter topic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from google.protobuf.message import DecodeError

from services.common.events import PROTOBUF_CONTENT_TYPE, EnvelopeError, IncomingRecord, decode, type_name
from services.common.proto.mlops.v1.events_pb2 import RawEvent
from services.common.values import from_feature_value
from services.ingest.validation import RawInput, Reason, Rejection

CLOUDEVENTS_JSON = "application/cloudevents+json"
REQUIRED_CE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")
SPEC_VERSION = "1.0"
"""The one CloudEvents version the Kafka binding here follows: 0.3 names attributes
differently (``schemaurl``, ``datacontentencoding``), so its events are refused, not guessed."""
RAW_EVENT_TYPE = type_name(RawEvent)
"""The type of every raw event, whatever its encoding: the body (flat JSON or the protobuf)
is one contract, and an event of another type sent to the raw topic is a mistake to surface."""


class Encoding:
    JSON = "json"
    CLOUDEVENT_JSON = "cloudevent-json"
    CLOUDEVENT_PROTOBUF = "cloudevent-protobuf"
    CLOUDEVENT_STRUCTURED = "cloudevent-structured"


@dataclass(slots=True)
class Decoded:
    """A decoded event and how it was encoded (to re-encode a redacted dead letter)."""

    event: RawInput
    encoding: str
    size: int
    envelope: dict[str, Any] | None = None


def _header(record: IncomingRecord, name: str) -> bytes | None:
    for key, value in record.headers:
        if key == name:
            return value if value is not None else b""
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def parse_json_object(body: bytes | str) -> dict[str, Any] | Rejection:
    """A JSON object from ``body``, or why it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, json.JSONDecodeError) else "not UTF-8 JSON"
        return Rejection(Reason.UNDECODABLE, "", f"not a JSON object: {detail}")
    if not isinstance(value, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, "", f"an event must be a JSON object, got {type(value).__name__}"
        )
    return value


def event_from_object(obj: dict[str, Any]) -> RawInput | Rejection:
    """A flat event object: ``"dataset"`` names the schema, every other key is a field."""
    fields = dict(obj)
    dataset = fields.pop("dataset", None)
    if dataset is None:
        return Rejection(Reason.MISSING_FIELD, "dataset", "'dataset' must name the event's dataset")
    if not isinstance(dataset, str) or not dataset:
        return Rejection(Reason.WRONG_TYPE, "dataset", "'dataset' must be a non-empty text")
    return RawInput(dataset=dataset, fields=fields)


def event_from_proto(message: RawEvent) -> RawInput | Rejection:
    if not message.dataset:
        return Rejection(Reason.MISSING_FIELD, "dataset", "RawEvent.dataset must name the event's dataset")
    fields: dict[str, Any] = {}
    for name, value in message.fields.items():
        fields[name] = from_feature_value(value)
    event_time = message.event_time.ToDatetime(tzinfo=UTC) if message.HasField("event_time") else None
    return RawInput(
        dataset=message.dataset,
        fields=fields,
        event_id=message.event_id or None,
        entity_id=message.entity_id or None,
        event_time=event_time,
    )


def decode_record(record: IncomingRecord) -> Decoded | Rejection:
    """The event in ``record``, whichever supported encoding it uses.

    Size is judged later, once the dataset is known (``Decoded.size``), so that the
    dead letter of an oversize event can still have its private values pseudonymized.
    """
    if record.value is None or not record.value:
        return Rejection(Reason.EMPTY_VALUE, "", "the record has no value")
    content_type = (_header(record, "content-type") or b"").decode("latin-1")
    if _header(record, "ce_specversion") is not None:
        return _binary_cloudevent(record, content_type)
    if content_type.split(";", 1)[0].strip().lower() == CLOUDEVENTS_JSON:
        return _structured_cloudevent(record.value)
    obj = parse_json_object(record.value)
    if isinstance(obj, Rejection):
        return obj
    event = event_from_object(obj)
    return event if isinstance(event, Rejection) else Decoded(event, Encoding.JSON, len(record.value))


def _envelope_refused(spec_version: object, event_type: object, prefix: str) -> Rejection | None:
    """Why an envelope's version or type is not the raw topic's, if it is not (``prefix`` is
    ``ce_`` for the binary mode's headers, empty for the structured mode's attributes)."""
    if spec_version != SPEC_VERSION:
        return Rejection(
            "bad_envelope",
            f"{prefix}specversion",
            f"CloudEvents specversion must be {SPEC_VERSION!r}, got {spec_version!r}",
        )
    if event_type != RAW_EVENT_TYPE:
        return Rejection(
            "unexpected_type", f"{prefix}type", f"expected type {RAW_EVENT_TYPE!r}, got {event_type!r}"
        )
    return None


def _text_header(record: IncomingRecord, name: str) -> str:
    return (_header(record, name) or b"").decode("utf-8", errors="replace")


def _binary_cloudevent(record: IncomingRecord, content_type: str) -> Decoded | Rejection:
    missing = [name for name in REQUIRED_CE_HEADERS if _header(record, name) is None]
    if missing:
        return Rejection("not_cloudevent", missing[0], f"missing CloudEvents header(s): {', '.join(missing)}")
    refused = _envelope_refused(
        _text_header(record, "ce_specversion"), _text_header(record, "ce_type"), "ce_"
    )
    if refused is not None:
        return refused
    if content_type.split(";", 1)[0].strip().lower() == PROTOBUF_CONTENT_TYPE:
        try:
            envelope = decode(record, RawEvent)
        except EnvelopeError as exc:
            return Rejection(exc.error_class, "", str(exc))
        except DecodeError as exc:  # pragma: no cover - decode() maps parse errors already
            return Rejection(Reason.UNDECODABLE, "", str(exc))
        event = event_from_proto(envelope.message)
        return (
            event
            if isinstance(event, Rejection)
            else Decoded(event, Encoding.CLOUDEVENT_PROTOBUF, len(envelope.record.value or b""))
        )
    if _is_json(content_type):
        assert record.value is not None
        obj = parse_json_object(record.value)
        if isinstance(obj, Rejection):
            return obj
        event = event_from_object(obj)
        return (
            event
            if isinstance(event, Rejection)
            else Decoded(event, Encoding.CLOUDEVENT_JSON, len(record.value))
        )
    expected = f"{PROTOBUF_CONTENT_TYPE} ({type_name(RawEvent)}) or application/json"
    return Rejection("unexpected_content_type", "content-type", f"expected {expected}, got {content_type!r}")


def _structured_cloudevent(body: bytes) -> Decoded | Rejection:
    envelope = parse_json_object(body)
    if isinstance(envelope, Rejection):
        return envelope
    missing = [name for name in ("specversion", "id", "source", "type") if name not in envelope]
    if missing:
        return Rejection(
            "not_cloudevent", missing[0], f"missing CloudEvents attribute(s): {', '.join(missing)}"
        )
    refused = _envelope_refused(envelope["specversion"], envelope["type"], "")
    if refused is not None:
        return refused
    data = envelope.get("data")
    if not isinstance(data, dict):
        return Rejection(Reason.NOT_AN_OBJECT, "data", "the CloudEvent's data must be a JSON object")
    event = event_from_object(data)
    if isinstance(event, Rejection):
        return event
    return Decoded(event, Encoding.CLOUDEVENT_STRUCTURED, len(body), envelope=envelope)


def redacted_body(
    decoded: Decoded,
    redact_fields: Callable[[dict[str, Any]], dict[str, Any]],
    redact_value: Callable[[Any], str],
    entity_is_private: bool,
) -> bytes:
    """The event re-encoded as it arrived, with private values pseudonymized."""
    event = decoded.event
    fields = redact_fields(event.fields)
    if decoded.encoding == Encoding.CLOUDEVENT_PROTOBUF:
        message = RawEvent(dataset=event.dataset, event_id=event.event_id or "")
        if event.entity_id:
            message.entity_id = redact_value(event.entity_id) if entity_is_private else event.entity_id
        if event.event_time is not None:
            message.event_time.FromDatetime(event.event_time)
        for name, value in fields.items():
            if value is None:
                continue
            cell = message.fields[name]
            if isinstance(value, bool):
                cell.bool_value = value
            elif isinstance(value, int | float):
                cell.number_value = float(value)
            else:
                cell.string_value = str(value)
        return message.SerializeToString()
    body = {"dataset": event.dataset, **fields}
    if decoded.encoding == Encoding.CLOUDEVENT_STRUCTURED and decoded.envelope is not None:
        body = {**decoded.envelope, "data": body}
    return json.dumps(body, default=str).encode("utf-8")
