"""Event validation against a dataset schema: the rules, the reasons, the row that results.

An event is a flat mapping of field names to JSON values (the raw-event contract), plus
optionally the id, entity and time an envelope carried (protobuf ``RawEvent``). The
validator either refuses it with one precise :class:`Rejection` (error class, field,
message) or turns it into a :class:`ValidEvent`: values converted, private fields
pseudonymized, derived features computed. No I/O here.

Messages never quote the value of a private field, so a rejection can be logged,
dead-lettered and answered over HTTP without leaking what it refused.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.features import FeatureDeriver
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType
from services.common.proto.mlops.v1.model_pb2 import FeatureValue
from services.common.values import label_text
from services.ingest.privacy import REDACTED, Pseudonymizer

Scalar = float | str | bool
MAX_ID_CHARS = 512
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters, refused in ids."""


class Reason(enum.StrEnum):
    """Why an event was refused: the ``dlq.error.class`` header and the metrics label."""

    UNDECODABLE = "undecodable"
    NOT_AN_OBJECT = "not_an_object"
    EMPTY_VALUE = "empty_value"
    OVERSIZE = "oversize"
    UNKNOWN_DATASET = "unknown_dataset"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CATEGORY = "unknown_category"
    NOT_FINITE = "not_finite"
    BAD_TIMESTAMP = "bad_timestamp"
    CONFLICTING_FIELD = "conflicting_field"
    PSEUDONYMIZATION_UNAVAILABLE = "pseudonymization_unavailable"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event refused, with the reason class, the field at fault ("" for the whole event)
    and a message a person can act on."""

    error_class: str
    field: str
    message: str


@dataclass(slots=True)
class RawInput:
    """An event as decoded from its transport, before validation."""

    dataset: str
    fields: dict[str, Any]
    event_id: str | None = None
    entity_id: str | None = None
    event_time: datetime | None = None


@dataclass(slots=True)
class ValidEvent:
    """A validated event: a full row, or a label for an earlier event (``label_only``)."""

    event_id: str
    entity_id: str
    event_time: datetime | None
    features: dict[str, Scalar]
    label: Scalar | None
    label_only: bool = False


def set_cell(cell: FeatureValue, value: Scalar) -> None:
    """Write a validated scalar into a ``FeatureValue`` in place (no intermediate message:
    this runs for every feature of every row)."""
    if value is True or value is False:
        cell.bool_value = value
    elif isinstance(value, str):
        cell.string_value = value
    else:
        cell.number_value = value


class _Invalid(Exception):
    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


Converter = Callable[[Any], Any]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _number(spec: FieldSpec) -> Converter:
    low = spec.min if spec.has_min else None
    high = spec.max if spec.has_max else None
    shown = not spec.private

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(Reason.WRONG_TYPE, f"must be a number, got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise _Invalid(Reason.OUT_OF_RANGE, "is too large for a 64-bit float") from None
        if not math.isfinite(number):
            raise _Invalid(Reason.NOT_FINITE, "must be a finite number, got NaN or infinity")
        if low is not None and number < low:
            raise _Invalid(
                Reason.OUT_OF_RANGE,
                f"{number!r} is below the minimum {low!r}" if shown else "is below the minimum",
            )
        if high is not None and number > high:
            raise _Invalid(
                Reason.OUT_OF_RANGE,
                f"{number!r} is above the maximum {high!r}" if shown else "is above the maximum",
            )
        return number

    return convert


def _check_length(spec: FieldSpec, text: str) -> None:
    if spec.max_length and len(text) > spec.max_length:
        raise _Invalid(
            Reason.OVERSIZE, f"has {len(text)} characters, more than the maximum {spec.max_length}"
        )


def _category(spec: FieldSpec) -> Converter:
    allowed = frozenset(spec.allowed_values)

    def convert(value: Any) -> str:
        if isinstance(value, str):
            text = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and _integral(value):
            # Integral numbers name categories too (a label 1 is the class "1").
            text = label_text(value)
        else:
            raise _Invalid(Reason.WRONG_TYPE, f"must be a category (text or integer), got {_kind(value)}")
        _check_length(spec, text)
        if allowed and text not in allowed:
            shown = f"{text!r} " if not spec.private else ""
            raise _Invalid(Reason.UNKNOWN_CATEGORY, f"{shown}is not one of the allowed values")
        return text

    return convert


def _integral(value: float) -> bool:
    try:
        return math.isfinite(value) and float(value).is_integer()
    except OverflowError:
        return False


def _text(spec: FieldSpec) -> Converter:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(Reason.WRONG_TYPE, f"must be text, got {_kind(value)}")
        _check_length(spec, value)
        return value

    return convert


def _boolean(spec: FieldSpec) -> Converter:
    def convert(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(Reason.WRONG_TYPE, f"must be true or false, got {_kind(value)}")
        return value

    return convert


def parse_timestamp(value: Any) -> datetime:
    """An aware UTC datetime truncated to milliseconds (what the database keeps), from
    ISO-8601 text with an offset or an aware datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid(Reason.BAD_TIMESTAMP, "is not an ISO-8601 timestamp") from None
    else:
        raise _Invalid(Reason.WRONG_TYPE, f"must be an ISO-8601 timestamp, got {_kind(value)}")
    if moment.tzinfo is None:
        raise _Invalid(Reason.BAD_TIMESTAMP, "needs a UTC offset (for example 2026-11-26T10:00:00Z)")
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _converter(spec: FieldSpec) -> Converter:
    if spec.type == FieldType.FIELD_TYPE_NUMBER:
        return _number(spec)
    if spec.type == FieldType.FIELD_TYPE_CATEGORY:
        return _category(spec)
    if spec.type == FieldType.FIELD_TYPE_TEXT:
        return _text(spec)
    if spec.type == FieldType.FIELD_TYPE_BOOLEAN:
        return _boolean(spec)
    return parse_timestamp


class EventValidator:
    """Validates events against one schema version; compiled once, used for every event.

    Parameters
    ----------
    schema:
        A schema that passed :func:`services.ingest.schemas.validate_schema`.
    pseudonymizer:
        Pseudonymizes private fields; None refuses events of schemas with private fields
        (``pseudonymization_unavailable``) rather than storing raw values.
    max_clock_skew_seconds:
        How far in the future an event's timestamp may be.
    """

    def __init__(
        self, schema: DatasetSchema, pseudonymizer: Pseudonymizer | None, max_clock_skew_seconds: float
    ):
        self.schema = schema
        self._pseudonymizer = pseudonymizer
        self._skew = max_clock_skew_seconds
        self._fields = [(spec.name, spec, _converter(spec)) for spec in schema.fields]
        self._known = frozenset(spec.name for spec in schema.fields)
        self._private = frozenset(spec.name for spec in schema.fields if spec.private)
        self._roles = {
            schema.event_id_field,
            schema.entity_id_field,
            schema.timestamp_field,
            schema.label_field,
        }
        self._roles.discard("")
        self._feature_fields = self._known - self._roles
        self._timestamp_fields = frozenset(
            spec.name for spec in schema.fields if spec.type == FieldType.FIELD_TYPE_TIMESTAMP
        )
        self._deriver = FeatureDeriver(schema.derived)

    @property
    def private_fields(self) -> frozenset[str]:
        return self._private

    @property
    def entity_is_private(self) -> bool:
        return bool(self.schema.entity_id_field) and self.schema.entity_id_field in self._private

    def validate(self, event: RawInput, now: datetime) -> ValidEvent | Rejection:
        """The event as a row (or a label update), or the first reason it is refused."""
        schema = self.schema
        fields = event.fields
        conflict = self._merge_envelope(event)
        if conflict is not None:
            return conflict
        unknown = fields.keys() - self._known
        if unknown:
            name = sorted(unknown)[0][:128]
            return Rejection(
                Reason.UNKNOWN_FIELD, name, f"{name!r} is not a field of {schema.name} v{schema.version}"
            )
        label_only = bool(
            schema.label_field
            and fields.get(schema.label_field) is not None
            and not any(fields.get(name) is not None for name in self._feature_fields)
        )
        values: dict[str, Any] = {}
        for name, spec, convert in self._fields:
            value = fields.get(name)
            if value is None:
                if spec.required and not (label_only and name != schema.event_id_field):
                    return Rejection(Reason.MISSING_FIELD, name, f"{name!r} is required")
                continue
            try:
                values[name] = convert(value)
            except _Invalid as exc:
                return Rejection(exc.reason, name, f"{name!r} {exc.message}")
        event_time: datetime | None = values.get(schema.timestamp_field)
        if event_time is not None and (event_time - now).total_seconds() > self._skew:
            field = schema.timestamp_field
            return Rejection(
                Reason.BAD_TIMESTAMP, field, f"{field!r} is more than {self._skew:g} s in the future"
            )
        event_id: str = values[schema.event_id_field]
        if not event_id or len(event_id) > MAX_ID_CHARS:
            field = schema.event_id_field
            return Rejection(
                Reason.OUT_OF_RANGE, field, f"{field!r} must have 1 to {MAX_ID_CHARS} characters"
            )
        entity_id: str = values.get(schema.entity_id_field, "") if schema.entity_id_field else ""
        if len(entity_id) > MAX_ID_CHARS:
            field = schema.entity_id_field
            return Rejection(Reason.OUT_OF_RANGE, field, f"{field!r} has more than {MAX_ID_CHARS} characters")
        for field, identifier in ((schema.event_id_field, event_id), (schema.entity_id_field, entity_id)):
            control = _CONTROL.search(identifier)
            if control is not None:
                # Ids end up in keys, headers, logs and file names: a newline or NUL in one
                # forges log lines and breaks the tools that read them.
                return Rejection(
                    Reason.OUT_OF_RANGE,
                    field,
                    f"{field!r} has a control character ({control.group()!r} at {control.start()})",
                )
        derived = self._deriver.compute(values) if not label_only else {}
        if self._private:
            pseudonymized = self._pseudonymize(values)
            if isinstance(pseudonymized, Rejection):
                return pseudonymized
            entity_id = values.get(schema.entity_id_field, "") if schema.entity_id_field else ""
        features: dict[str, Scalar] = {}
        for name in self._feature_fields:
            if name in values:
                value = values[name]
                features[name] = value.timestamp() if name in self._timestamp_fields else value
        for name, result in derived.items():
            if result is not None:
                features[name] = result
        return ValidEvent(
            event_id=event_id,
            entity_id=entity_id,
            event_time=event_time,
            features=features if not label_only else {},
            label=values.get(schema.label_field) if schema.label_field else None,
            label_only=label_only,
        )

    def _merge_envelope(self, event: RawInput) -> Rejection | None:
        """Put the ids and time an envelope carried into the schema's fields."""
        schema = self.schema
        pairs = (
            (schema.event_id_field, event.event_id),
            (schema.entity_id_field, event.entity_id),
            (schema.timestamp_field, event.event_time),
        )
        for name, value in pairs:
            if not name or value is None or value == "":
                continue
            present = event.fields.get(name)
            if present is None:
                event.fields[name] = value
            elif present != value and not (isinstance(value, datetime) and _same_instant(present, value)):
                return Rejection(
                    Reason.CONFLICTING_FIELD, name, f"{name!r} differs from the envelope's value"
                )
        return None

    def _pseudonymize(self, values: dict[str, Any]) -> Rejection | None:
        for name in self._private:
            if name not in values:
                continue
            if self._pseudonymizer is None:
                return Rejection(
                    Reason.PSEUDONYMIZATION_UNAVAILABLE,
                    name,
                    f"{name!r} is private and no pseudonymization key is configured",
                )
            values[name] = self._pseudonymizer(values[name])
        return None

    def redact(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``fields`` with every private value replaced by its pseudonym (or removed when no
        key is configured), whatever its type: what a dead letter may carry."""
        redacted = dict(fields)
        for name in self._private & redacted.keys():
            redacted[name] = self.redact_value(redacted[name])
        return redacted

    def redact_value(self, value: Any) -> str:
        if self._pseudonymizer is None:
            return REDACTED
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return self._pseudonymizer(text)


def _same_instant(present: Any, envelope_time: datetime) -> bool:
    try:
        return parse_timestamp(present) == parse_timestamp(envelope_time)
    except _Invalid:
        return False
