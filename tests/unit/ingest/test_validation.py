"""Event validation: every reason an event is refused, what a valid one becomes, and that
private values leave only as pseudonyms."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.ingest.privacy import REDACTED, Pseudonymizer
from services.ingest.validation import EventValidator, RawInput, Reason, Rejection, ValidEvent
from tests.unit.ingest.helpers import KEY, NOW, demo_schema, event

PSEUDONYMIZER = Pseudonymizer(KEY, "7")


def validate(
    fields: dict[str, Any], validator: EventValidator | None = None, **envelope: Any
) -> ValidEvent | Rejection:
    validator = validator or EventValidator(demo_schema(), PSEUDONYMIZER, max_clock_skew_seconds=3600)
    return validator.validate(RawInput(dataset="demo", fields=fields, **envelope), NOW)


def rejected(fields: dict[str, Any], **envelope: Any) -> Rejection:
    result = validate(fields, **envelope)
    assert isinstance(result, Rejection), result
    return result


def test_a_valid_event_becomes_a_row_with_pseudonyms_and_derived_features() -> None:
    result = validate(event(signup="2026-01-01T00:00:00+01:00"))
    assert isinstance(result, ValidEvent)
    assert result.event_id == "e1"
    assert result.entity_id == PSEUDONYMIZER("alice")
    assert result.event_time == datetime(2026, 11, 26, 10, 30, 0, 123000, tzinfo=UTC)
    assert result.label == "1"
    assert not result.label_only
    assert result.features == {
        "amount": 50.0,
        "items": 4.0,
        "country": "FR",
        "vip": False,
        "email": PSEUDONYMIZER("alice@example.com"),
        "note": "hi",
        "signup": datetime(2025, 12, 31, 23, 0, tzinfo=UTC).timestamp(),
        "hour": 10.0,
        "per_item": 12.5,
    }


def test_optional_fields_may_be_missing_and_undefined_derived_features_are_left_out() -> None:
    result = validate(event(items=None, country=None, vip=None, email=None, note=None, label=None))
    assert isinstance(result, ValidEvent)
    assert set(result.features) == {"amount", "hour"}
    assert result.label is None


def test_json_null_counts_as_missing() -> None:
    assert validate(event(items=None) | {"items": None}) == validate(event(items=None))
    refused = rejected(event() | {"amount": None})
    assert (refused.error_class, refused.field) == (Reason.MISSING_FIELD, "amount")


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"amount": None}, Reason.MISSING_FIELD, "amount"),
        ({"event_id": None}, Reason.MISSING_FIELD, "event_id"),
        ({"ts": None}, Reason.MISSING_FIELD, "ts"),
        ({"amount": "50"}, Reason.WRONG_TYPE, "amount"),
        ({"amount": True}, Reason.WRONG_TYPE, "amount"),
        ({"amount": [1]}, Reason.WRONG_TYPE, "amount"),
        ({"amount": {"v": 1}}, Reason.WRONG_TYPE, "amount"),
        ({"vip": 1}, Reason.WRONG_TYPE, "vip"),
        ({"note": 5}, Reason.WRONG_TYPE, "note"),
        ({"event_id": 17}, Reason.WRONG_TYPE, "event_id"),
        ({"country": 1.5}, Reason.WRONG_TYPE, "country"),
        ({"country": True}, Reason.WRONG_TYPE, "country"),
        ({"ts": 1764150000}, Reason.WRONG_TYPE, "ts"),
        ({"amount": -0.01}, Reason.OUT_OF_RANGE, "amount"),
        ({"amount": 1000.5}, Reason.OUT_OF_RANGE, "amount"),
        ({"amount": 10**400}, Reason.OUT_OF_RANGE, "amount"),
        ({"event_id": ""}, Reason.OUT_OF_RANGE, "event_id"),
        ({"event_id": "x" * 513}, Reason.OUT_OF_RANGE, "event_id"),
        ({"event_id": 'e1\n{"level": "error"}'}, Reason.OUT_OF_RANGE, "event_id"),
        ({"event_id": "e\x001"}, Reason.OUT_OF_RANGE, "event_id"),
        ({"event_id": "e\x851"}, Reason.OUT_OF_RANGE, "event_id"),
        ({"user": "al\x1bice"}, Reason.OUT_OF_RANGE, "user"),
        ({"amount": math.nan}, Reason.NOT_FINITE, "amount"),
        ({"items": math.inf}, Reason.NOT_FINITE, "items"),
        ({"items": -math.inf}, Reason.NOT_FINITE, "items"),
        ({"country": "ES"}, Reason.UNKNOWN_CATEGORY, "country"),
        ({"country": 2}, Reason.UNKNOWN_CATEGORY, "country"),
        ({"country": "FRA"}, Reason.OVERSIZE, "country"),
        ({"note": "x" * 11}, Reason.OVERSIZE, "note"),
        ({"ts": "yesterday"}, Reason.BAD_TIMESTAMP, "ts"),
        ({"ts": "2026-11-26T10:30:00"}, Reason.BAD_TIMESTAMP, "ts"),
        ({"ts": "2026-11-26T14:00:01Z"}, Reason.BAD_TIMESTAMP, "ts"),
        ({"signup": "2026-13-01T00:00:00Z"}, Reason.BAD_TIMESTAMP, "signup"),
        ({"colour": "red"}, Reason.UNKNOWN_FIELD, "colour"),
    ],
)
def test_each_violation_is_refused_with_its_reason_and_field(
    changes: dict[str, Any], reason: Reason, field: str
) -> None:
    refused = rejected(event(**changes))
    assert (refused.error_class, refused.field) == (reason, field)
    assert field in refused.message


def test_a_category_accepts_integers_as_their_canonical_text() -> None:
    result = validate(event(country=1, label=1.0))
    assert isinstance(result, ValidEvent)
    assert result.features["country"] == "1"
    assert result.label == "1"


def test_timestamps_within_the_allowed_clock_skew_are_accepted() -> None:
    result = validate(event(ts=(NOW + timedelta(minutes=59)).isoformat()))
    assert isinstance(result, ValidEvent)


def test_messages_never_quote_a_private_value() -> None:
    validator = EventValidator(demo_schema(), PSEUDONYMIZER, max_clock_skew_seconds=3600)
    validator.schema.fields[7].max_length = 5  # email
    for value in ("secret-address@example.com", 12345, ["secret-address"]):
        refused = validate(event(email=value), validator)
        assert isinstance(refused, Rejection)
        assert refused.field == "email"
        assert "secret" not in refused.message and "12345" not in refused.message


def test_a_label_alone_updates_an_earlier_event() -> None:
    result = validate({"event_id": "e0", "label": "FR"})
    assert isinstance(result, ValidEvent)
    assert result.label_only
    assert (result.event_id, result.label, result.features, result.event_time) == ("e0", "FR", {}, None)


def test_a_label_update_still_validates_what_it_carries() -> None:
    refused = rejected({"event_id": "e0", "label": 1.5})
    assert (refused.error_class, refused.field) == (Reason.WRONG_TYPE, "label")
    refused = rejected({"label": 1})
    assert (refused.error_class, refused.field) == (Reason.MISSING_FIELD, "event_id")


def test_envelope_ids_and_time_fill_the_schema_fields() -> None:
    fields = event(event_id=None, user=None, ts=None)
    result = validate(
        fields, event_id="e9", entity_id="bob", event_time=datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    )
    assert isinstance(result, ValidEvent)
    assert (result.event_id, result.entity_id) == ("e9", PSEUDONYMIZER("bob"))
    assert result.event_time == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_envelope_values_that_contradict_the_fields_are_refused() -> None:
    refused = rejected(event(), event_id="other")
    assert (refused.error_class, refused.field) == (Reason.CONFLICTING_FIELD, "event_id")
    same_instant = validate(
        event(ts="2026-11-26T11:30:00.123+01:00"),
        event_time=datetime(2026, 11, 26, 10, 30, 0, 123000, tzinfo=UTC),
    )
    assert isinstance(same_instant, ValidEvent)


def test_without_a_key_private_fields_are_refused_not_stored() -> None:
    validator = EventValidator(demo_schema(), None, max_clock_skew_seconds=3600)
    refused = validate(event(), validator)
    assert isinstance(refused, Rejection)
    assert refused.error_class == Reason.PSEUDONYMIZATION_UNAVAILABLE
    assert validator.redact(event())["user"] == REDACTED


def test_redaction_pseudonymizes_private_values_of_any_type() -> None:
    validator = EventValidator(demo_schema(), PSEUDONYMIZER, max_clock_skew_seconds=3600)
    redacted = validator.redact(event(email=["alice@example.com"]))
    assert redacted["user"] == PSEUDONYMIZER("alice")
    assert redacted["email"].startswith("7:") and "alice" not in redacted["email"]
    assert redacted["amount"] == 50
