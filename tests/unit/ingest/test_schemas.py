"""Schema rules: what a valid schema is, which changes break models, which version a
registration becomes."""

from __future__ import annotations

import pytest

from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature
from services.ingest.schemas import (
    Registration,
    SchemaConflict,
    SchemaError,
    SchemaUnsupported,
    breaking_changes,
    check_storable,
    plan_registration,
    validate_schema,
)
from tests.unit.ingest.helpers import demo_schema

NUMBER, TEXT, CATEGORY = FieldType.FIELD_TYPE_NUMBER, FieldType.FIELD_TYPE_TEXT, FieldType.FIELD_TYPE_CATEGORY


def changed(mutate: object) -> DatasetSchema:
    schema = demo_schema()
    mutate(schema)  # type: ignore[operator]
    return schema


def field(schema: DatasetSchema, name: str) -> FieldSpec:
    return next(spec for spec in schema.fields if spec.name == name)


def test_the_demo_schema_is_valid() -> None:
    validate_schema(demo_schema())


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda s: setattr(s, "name", "bad name"), "name"),
        (lambda s: setattr(s, "name", ""), "name"),
        (lambda s: setattr(s, "version", -1), "version"),
        (lambda s: s.ClearField("fields"), "fields"),
        (lambda s: setattr(s, "retention_seconds", -5), "retention_seconds"),
        (lambda s: s.fields.append(FieldSpec(name="amount", type=NUMBER)), "fields[11].name"),
        (lambda s: s.fields.append(FieldSpec(name="dataset", type=TEXT)), "fields[11].name"),
        (lambda s: s.fields.append(FieldSpec(name="a.b", type=TEXT)), "fields[11].name"),
        (lambda s: s.fields.append(FieldSpec(name="x")), "fields[11].type"),
        (lambda s: s.fields.append(FieldSpec(name="x", type=TEXT, has_min=True)), "fields[11].min"),
        (
            lambda s: s.fields.append(FieldSpec(name="x", type=NUMBER, has_min=True, min=float("nan"))),
            "fields[11].min",
        ),
        (
            lambda s: s.fields.append(
                FieldSpec(name="x", type=NUMBER, has_min=True, min=2, has_max=True, max=1)
            ),
            "fields[11].max",
        ),
        (
            lambda s: s.fields.append(FieldSpec(name="x", type=TEXT, allowed_values=["a"])),
            "fields[11].allowed_values",
        ),
        (
            lambda s: s.fields.append(FieldSpec(name="x", type=CATEGORY, allowed_values=["a", "a"])),
            "fields[11].allowed_values",
        ),
        (lambda s: s.fields.append(FieldSpec(name="x", type=NUMBER, max_length=3)), "fields[11].max_length"),
        (lambda s: s.fields.append(FieldSpec(name="x", type=NUMBER, private=True)), "fields[11].private"),
        (lambda s: setattr(s, "event_id_field", ""), "event_id_field"),
        (lambda s: setattr(s, "event_id_field", "nope"), "event_id_field"),
        (lambda s: setattr(s, "event_id_field", "amount"), "event_id_field"),
        (lambda s: setattr(s, "event_id_field", "email"), "event_id_field"),
        (lambda s: setattr(s, "timestamp_field", "signup"), "timestamp_field"),
        (lambda s: setattr(s, "label_field", "email"), "label_field"),
        (lambda s: setattr(s, "label_field", "note"), "label_field"),
        (lambda s: setattr(s, "entity_id_field", "event_id"), ""),
        (
            lambda s: s.derived.append(DerivedFeature(name="amount", function="log1p", inputs=["items"])),
            "derived[2].name",
        ),
        (
            lambda s: s.derived.append(DerivedFeature(name="z", function="sqrt", inputs=["items"])),
            "derived[2].function",
        ),
        (
            lambda s: s.derived.append(DerivedFeature(name="z", function="ratio", inputs=["items"])),
            "derived[2].inputs",
        ),
        (
            lambda s: s.derived.append(DerivedFeature(name="z", function="log1p", inputs=["note"])),
            "derived[2].inputs",
        ),
        (
            lambda s: s.derived.append(DerivedFeature(name="z", function="bucket", inputs=["items"])),
            "derived[2].boundaries",
        ),
        (
            lambda s: s.derived.append(
                DerivedFeature(name="z", function="bucket", inputs=["items"], boundaries=[2, 1])
            ),
            "derived[2].boundaries",
        ),
        (
            lambda s: s.derived.append(
                DerivedFeature(name="z", function="log1p", inputs=["items"], boundaries=[1])
            ),
            "derived[2].boundaries",
        ),
    ],
)
def test_invalid_schemas_are_refused_naming_the_field(mutate: object, path: str) -> None:
    with pytest.raises(SchemaError) as caught:
        validate_schema(changed(mutate))
    assert caught.value.field == path


def test_a_private_field_cannot_feed_a_derived_feature() -> None:
    schema = demo_schema()
    field(schema, "country").private = True
    schema.fields.append(FieldSpec(name="seen", type=FieldType.FIELD_TYPE_TIMESTAMP))
    schema.derived.append(DerivedFeature(name="seen_hour", function="hour_of_day", inputs=["seen"]))
    validate_schema(schema)
    field(schema, "items").private = True
    with pytest.raises(SchemaError):
        validate_schema(schema)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.fields.append(FieldSpec(name="new", type=NUMBER, required=True)),
        lambda s: setattr(field(s, "items"), "required", True),
        lambda s: setattr(field(s, "amount"), "max", 5000),
        lambda s: field(s, "country").allowed_values.append("IT"),
        lambda s: setattr(s, "retention_seconds", 86400),
        lambda s: setattr(s, "description", "orders"),
        lambda s: s.derived.append(DerivedFeature(name="size", function="log1p", inputs=["amount"])),
    ],
)
def test_compatible_changes(mutate: object) -> None:
    assert breaking_changes(demo_schema(), changed(mutate)) == []


@pytest.mark.parametrize(
    ("mutate", "change"),
    [
        (lambda s: s.fields.remove(field(s, "note")), "field 'note' removed"),
        (
            lambda s: setattr(field(s, "items"), "type", CATEGORY),
            "field 'items' changed type from number to category",
        ),
        (lambda s: setattr(field(s, "amount"), "required", False), "field 'amount' became optional"),
        (lambda s: setattr(field(s, "note"), "private", True), "field 'note' became private"),
        (lambda s: setattr(s, "label_field", "country"), "label_field changed from 'label' to 'country'"),
        (lambda s: s.derived.pop(), "derived feature 'per_item' removed"),
        (lambda s: setattr(s.derived[0], "function", "day_of_week"), "derived feature 'hour' redefined"),
    ],
)
def test_breaking_changes_are_named(mutate: object, change: str) -> None:
    assert breaking_changes(demo_schema(), changed(mutate)) == [change]


def at(version: int, schema: DatasetSchema | None = None) -> DatasetSchema:
    result = DatasetSchema()
    result.CopyFrom(schema or demo_schema())
    result.version = version
    return result


def test_a_new_dataset_starts_at_version_one() -> None:
    assert plan_registration(at(0), None, None) == Registration(1, create=True)
    assert plan_registration(at(1), None, None) == Registration(1, create=True)
    with pytest.raises(SchemaError):
        plan_registration(at(3), None, None)


def test_registering_the_latest_unchanged_is_idempotent() -> None:
    latest = at(2)
    assert plan_registration(at(0), latest, None) == Registration(2, create=False)
    assert plan_registration(at(2), latest, latest) == Registration(2, create=False)


def test_a_compatible_change_becomes_the_next_version() -> None:
    candidate = at(0, changed(lambda s: s.fields.append(FieldSpec(name="new", type=NUMBER))))
    assert plan_registration(candidate, at(2), None) == Registration(3, create=True)


def test_a_breaking_change_needs_an_explicit_new_version() -> None:
    breaking = changed(lambda s: s.fields.remove(field(s, "note")))
    with pytest.raises(SchemaConflict, match="field 'note' removed.*version 3"):
        plan_registration(at(0, breaking), at(2), None)
    assert plan_registration(at(3, breaking), at(2), None) == Registration(3, create=True)


def test_versions_are_immutable_and_contiguous() -> None:
    other = changed(lambda s: setattr(s, "description", "changed"))
    with pytest.raises(SchemaConflict, match="immutable"):
        plan_registration(at(1, other), at(2), at(1))
    with pytest.raises(SchemaError, match="next version"):
        plan_registration(at(4), at(2), None)


def test_private_fields_need_a_pseudonymization_key() -> None:
    check_storable(demo_schema(), pseudonymization_enabled=True)
    with pytest.raises(SchemaUnsupported, match="INGEST_PSEUDONYMIZATION_KEY"):
        check_storable(demo_schema(), pseudonymization_enabled=False)
    public = demo_schema()
    for spec in public.fields:
        spec.private = False
    check_storable(public, pseudonymization_enabled=False)
