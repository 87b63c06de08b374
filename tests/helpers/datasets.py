"""The dataset schema the ingest tests register, unit and integration alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature


def orders_schema(
    name: str,
    *,
    entity_id_field: str = "customer",
    countries: Sequence[str] = ("FR", "DE", "IT"),
    country_max_length: int = 0,
    more_fields: Sequence[FieldSpec] = (),
    **overrides: Any,
) -> DatasetSchema:
    """Orders: an event id, a private entity id, a time, an amount in [0, 1000], a number of
    items, a country among ``countries``, ``more_fields``, then a label; the hour of day and
    the amount per item derived. ``overrides`` set the schema's other attributes (version,
    description, retention...)."""
    schema = DatasetSchema(
        name=name,
        event_id_field="event_id",
        entity_id_field=entity_id_field,
        timestamp_field="ts",
        label_field="label",
        fields=[
            FieldSpec(name="event_id", type=FieldType.FIELD_TYPE_TEXT, required=True),
            FieldSpec(name=entity_id_field, type=FieldType.FIELD_TYPE_TEXT, required=True, private=True),
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
                allowed_values=list(countries),
                max_length=country_max_length,
            ),
            *more_fields,
            FieldSpec(name="label", type=FieldType.FIELD_TYPE_CATEGORY),
        ],
        derived=[
            DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"]),
            DerivedFeature(name="per_item", function="ratio", inputs=["amount", "items"]),
        ],
    )
    for key, value in overrides.items():
        setattr(schema, key, value)
    return schema
