"""Property tests: whatever bytes or values a producer sends, decoding and validation
answer with a row or a precise refusal; they never raise, and a refusal never quotes a
private value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.events import IncomingRecord
from services.ingest.formats import Decoded, decode_record, redacted_body
from services.ingest.privacy import Pseudonymizer
from services.ingest.validation import EventValidator, RawInput, Rejection, ValidEvent
from tests.unit.ingest.helpers import KEY, NOW, demo_schema, event

VALIDATOR = EventValidator(demo_schema(), Pseudonymizer(KEY, "1"), max_clock_skew_seconds=3600)
FIELDS = [spec.name for spec in demo_schema().fields]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
headers = st.lists(
    st.tuples(
        st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type", "x"]),
        st.sampled_from(
            [
                b"1.0",
                b"application/protobuf",
                b"application/json",
                b"application/cloudevents+json",
                b"",
                b"\xff",
            ]
        ),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=300)), record_headers=headers)
def test_any_record_decodes_or_is_refused(
    value: bytes | None, record_headers: list[tuple[str, bytes]]
) -> None:
    result = decode_record(IncomingRecord("raw", 0, 0, None, value, tuple(record_headers), 0))
    assert isinstance(result, Decoded | Rejection)


private_values = st.one_of(values, st.text(max_size=20).map(lambda text: "secret-" + text))


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from([*FIELDS, "other", ""]), values, max_size=6),
    user=private_values,
    email=private_values,
)
def test_any_field_values_validate_or_are_refused(changes: dict[str, Any], user: Any, email: Any) -> None:
    fields = {**event(), **changes, "user": user, "email": email}
    result = VALIDATOR.validate(RawInput(dataset="demo", fields=dict(fields)), NOW)
    assert isinstance(result, ValidEvent | Rejection)
    if isinstance(result, Rejection):
        assert result.error_class and isinstance(result.field, str)
        assert "secret-" not in result.message
    body = redacted_body(
        Decoded(RawInput(dataset="demo", fields=dict(fields)), "json", 0),
        VALIDATOR.redact,
        VALIDATOR.redact_value,
        VALIDATOR.entity_is_private,
    )
    assert b"secret-" not in body
    assert json.loads(body)["dataset"] == "demo"
