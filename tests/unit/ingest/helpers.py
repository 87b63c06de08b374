"""Schemas and events the ingest unit tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType
from tests.helpers.datasets import orders_schema

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
KEY = b"k" * 32


def demo_schema(**overrides: Any) -> DatasetSchema:
    """The orders schema named demo, with every field type: a private field, a label and
    two derived features."""
    return orders_schema(
        "demo",
        entity_id_field="user",
        countries=("FR", "DE", "1"),
        country_max_length=2,
        more_fields=[
            FieldSpec(name="vip", type=FieldType.FIELD_TYPE_BOOLEAN),
            FieldSpec(name="email", type=FieldType.FIELD_TYPE_TEXT, private=True),
            FieldSpec(name="note", type=FieldType.FIELD_TYPE_TEXT, max_length=10),
            FieldSpec(name="signup", type=FieldType.FIELD_TYPE_TIMESTAMP),
        ],
        **{"version": 1, **overrides},
    )


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
