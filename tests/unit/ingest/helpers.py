"""Schemas and events the ingest unit tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, DerivedFeature, FieldSpec, FieldType

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
KEY = b"k" * 32


def demo_schema(**overrides: Any) -> DatasetSchema:
    """A dataset with every field type, a private field, a label and two derived features."""
    schema = DatasetSchema(
        name="demo",
        version=1,
        event_id_field="event_id",
        entity_id_field="user",
        timestamp_field="ts",
        label_field="label",
        fields=[
            FieldSpec(name="event_id", type=FieldType.FIELD_TYPE_TEXT, required=True),
            FieldSpec(name="user", type=FieldType.FIELD_TYPE_TEXT, required=True, private=True),
            FieldSpec(name="ts", type=FieldType.FIELD_TYPE_TIMESTAMP, required=True),
            FieldSpec(
                name="amount",
                type=FieldType.FIELD_TYPE_NUMBER,
                required=True,
                has_min=True,
                min=0,
                has_max=True,
                max=1000,
            ),
            FieldSpec(name="items", type=FieldType.FIELD_TYPE_NUMBER),
            FieldSpec(
                name="country",
                type=FieldType.FIELD_TYPE_CATEGORY,
                allowed_values=["FR", "DE", "1"],
                max_length=2,
            ),
            FieldSpec(name="vip", type=FieldType.FIELD_TYPE_BOOLEAN),
            FieldSpec(name="email", type=FieldType.FIELD_TYPE_TEXT, private=True),
            FieldSpec(name="note", type=FieldType.FIELD_TYPE_TEXT, max_length=10),
            FieldSpec(name="signup", type=FieldType.FIELD_TYPE_TIMESTAMP),
            FieldSpec(name="label", type=FieldType.FIELD_TYPE_CATEGORY),
        ],
        derived=[
            DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"]),
            DerivedFeature(name="per_item", function="ratio", inputs=["amount", "items"]),
        ],
    )
    for name, value in overrides.items():
        setattr(schema, name, value)
    return schema


def event(**fields: Any) -> dict[str, Any]:
    """A valid demo event, with ``fields`` replacing or adding values (None removes one)."""
    base: dict[str, Any] = {
        "event_id": "e1",
        "user": "alice",
        "ts": "2026-11-26T10:30:00.123456Z",
        "amount": 50,
        "items": 4,
        "country": "FR",
        "vip": False,
        "email": "alice@example.com",
        "note": "hi",
        "label": 1,
    }
    base.update(fields)
    return {name: value for name, value in base.items() if value is not None}
