"""Dataset schemas: what a valid schema is, which changes break models, and which
version a registration becomes. No I/O: the store and the API call these.

Versions are immutable (stored rows name the version that validated them). A change
is *compatible* when every feature a model trained on the old version reads is still
there with the same type and meaning: adding fields or derived features, making an
optional field required, changing bounds, allowed values, text lengths, the retention
or the description. Everything else is *breaking*: removing a field or a derived
feature, changing a type, making a required field optional (models would meet missing
values), marking a field private or public (its values change meaning), changing the
id, entity, timestamp or label field, or redefining a derived feature.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.features import DerivedFeatureError, check_definitions
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FIELD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
RESERVED_FIELDS = frozenset({"dataset"})
MAX_FIELDS = 1000
MAX_ALLOWED_VALUES = 10000
MAX_DESCRIPTION = 4096

_ID_TYPES: tuple[FieldType.ValueType, ...] = (FieldType.FIELD_TYPE_TEXT, FieldType.FIELD_TYPE_CATEGORY)
_LABEL_TYPES: tuple[FieldType.ValueType, ...] = (
    FieldType.FIELD_TYPE_NUMBER,
    FieldType.FIELD_TYPE_CATEGORY,
    FieldType.FIELD_TYPE_BOOLEAN,
)
_PRIVATE_TYPES: tuple[FieldType.ValueType, ...] = (FieldType.FIELD_TYPE_TEXT, FieldType.FIELD_TYPE_CATEGORY)


class SchemaError(InvalidArgument):
    """A schema that is not valid, naming the offending field path (``fields[2].min``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message, field=field)


class SchemaUnsupported(FailedPrecondition):
    """A valid schema this server cannot honour as configured."""


class SchemaConflict(FailedPrecondition):
    """A registration that contradicts what is stored: a breaking change without a new
    version, or different content under an existing version."""


def type_name(field_type: FieldType.ValueType) -> str:
    return FieldType.Name(field_type).removeprefix("FIELD_TYPE_").lower()


def validate_schema(schema: DatasetSchema) -> None:
    """Raise :class:`SchemaError` unless ``schema`` is usable as a dataset schema."""
    if not NAME_PATTERN.match(schema.name):
        raise SchemaError("name", f"must match {NAME_PATTERN.pattern}")
    if schema.version < 0:
        raise SchemaError("version", "must be 0 (next version) or a positive version number")
    if not schema.fields:
        raise SchemaError("fields", "a schema needs at least one field")
    if len(schema.fields) > MAX_FIELDS:
        raise SchemaError("fields", f"at most {MAX_FIELDS} fields")
    if len(schema.description) > MAX_DESCRIPTION:
        raise SchemaError("description", f"at most {MAX_DESCRIPTION} characters")
    if schema.retention_seconds < 0:
        raise SchemaError("retention_seconds", "must be 0 (keep rows) or positive")
    types: dict[str, FieldType.ValueType] = {}
    for index, spec in enumerate(schema.fields):
        _validate_field(f"fields[{index}]", spec)
        if spec.name in types:
            raise SchemaError(f"fields[{index}].name", f"duplicate field {spec.name!r}")
        types[spec.name] = spec.type
    by_name = {spec.name: spec for spec in schema.fields}
    _check_role(by_name, "event_id_field", schema.event_id_field, _ID_TYPES, required=True, public=True)
    timestamp_types = (FieldType.FIELD_TYPE_TIMESTAMP,)
    _check_role(
        by_name, "timestamp_field", schema.timestamp_field, timestamp_types, required=True, public=True
    )
    if schema.entity_id_field:
        _check_role(
            by_name, "entity_id_field", schema.entity_id_field, _ID_TYPES, required=False, public=False
        )
    if schema.label_field:
        _check_role(by_name, "label_field", schema.label_field, _LABEL_TYPES, required=False, public=True)
    roles = [schema.event_id_field, schema.timestamp_field, schema.entity_id_field, schema.label_field]
    named = [role for role in roles if role]
    if len(set(named)) != len(named):
        raise SchemaError("", "the event id, timestamp, entity id and label fields must be different fields")
    try:
        check_definitions(schema.derived, types)
    except DerivedFeatureError as exc:
        raise SchemaError(exc.field, str(exc)) from None
    for index, derived in enumerate(schema.derived):
        private = [name for name in derived.inputs if by_name[name].private]
        if private:
            raise SchemaError(
                f"derived[{index}].inputs", f"private field {private[0]!r} cannot feed a feature"
            )


def _validate_field(path: str, spec: FieldSpec) -> None:
    if not FIELD_PATTERN.match(spec.name):
        raise SchemaError(f"{path}.name", f"must match {FIELD_PATTERN.pattern}")
    if spec.name in RESERVED_FIELDS:
        raise SchemaError(f"{path}.name", f"{spec.name!r} is reserved: it names the dataset in raw events")
    if spec.type not in FieldType.values() or spec.type == FieldType.FIELD_TYPE_UNSPECIFIED:
        raise SchemaError(f"{path}.type", "must be number, category, boolean, timestamp or text")
    is_number = spec.type == FieldType.FIELD_TYPE_NUMBER
    if (spec.has_min or spec.has_max) and not is_number:
        raise SchemaError(f"{path}.min", "bounds apply to number fields only")
    if spec.has_min and not math.isfinite(spec.min):
        raise SchemaError(f"{path}.min", "must be finite")
    if spec.has_max and not math.isfinite(spec.max):
        raise SchemaError(f"{path}.max", "must be finite")
    if spec.has_min and spec.has_max and spec.min > spec.max:
        raise SchemaError(f"{path}.max", "must not be below min")
    if spec.allowed_values:
        if spec.type != FieldType.FIELD_TYPE_CATEGORY:
            raise SchemaError(f"{path}.allowed_values", "allowed values apply to category fields only")
        if len(spec.allowed_values) > MAX_ALLOWED_VALUES:
            raise SchemaError(f"{path}.allowed_values", f"at most {MAX_ALLOWED_VALUES} values")
        if len(set(spec.allowed_values)) != len(spec.allowed_values):
            raise SchemaError(f"{path}.allowed_values", "values must be distinct")
    if spec.max_length < 0:
        raise SchemaError(f"{path}.max_length", "must be 0 (no limit) or positive")
    if spec.max_length and spec.type not in _PRIVATE_TYPES:
        raise SchemaError(f"{path}.max_length", "lengths apply to text and category fields only")
    if spec.private and spec.type not in _PRIVATE_TYPES:
        raise SchemaError(f"{path}.private", "only text and category fields can be private")


def _check_role(
    fields: dict[str, FieldSpec],
    role: str,
    name: str,
    types: tuple[FieldType.ValueType, ...],
    required: bool,
    public: bool,
) -> None:
    if not name:
        raise SchemaError(role, "must name a field")
    spec = fields.get(name)
    if spec is None:
        raise SchemaError(role, f"{name!r} is not a field of the schema")
    if spec.type not in types:
        allowed = " or ".join(type_name(t) for t in types)
        raise SchemaError(role, f"{name!r} must be a {allowed} field")
    if required and not spec.required:
        raise SchemaError(role, f"{name!r} must be a required field")
    if public and spec.private:
        raise SchemaError(role, f"{name!r} cannot be private")


def has_private_fields(schema: DatasetSchema) -> bool:
    return any(spec.private for spec in schema.fields)


def check_storable(schema: DatasetSchema, pseudonymization_enabled: bool) -> None:
    """Raise :class:`SchemaUnsupported` for a schema whose events this server could not store."""
    if has_private_fields(schema) and not pseudonymization_enabled:
        raise SchemaUnsupported(
            "the schema has private fields but no pseudonymization key is configured "
            "(INGEST_PSEUDONYMIZATION_KEY): their values could not be stored"
        )


def _content(schema: DatasetSchema) -> DatasetSchema:
    """The schema without what the server sets (version, creation time, author and team)."""
    content = DatasetSchema()
    content.CopyFrom(schema)
    content.ClearField("version")
    content.ClearField("created_at")
    content.ClearField("created_by")
    content.ClearField("team")
    return content


def same_content(a: DatasetSchema, b: DatasetSchema) -> bool:
    return _content(a) == _content(b)


def breaking_changes(old: DatasetSchema, new: DatasetSchema) -> list[str]:
    """The changes from ``old`` to ``new`` that would break models trained on ``old``."""
    changes: list[str] = []
    for role in ("event_id_field", "entity_id_field", "timestamp_field", "label_field"):
        before, after = getattr(old, role), getattr(new, role)
        if before != after:
            changes.append(f"{role} changed from {before!r} to {after!r}")
    new_fields = {spec.name: spec for spec in new.fields}
    for spec in old.fields:
        after_spec = new_fields.get(spec.name)
        if after_spec is None:
            changes.append(f"field {spec.name!r} removed")
            continue
        if after_spec.type != spec.type:
            changes.append(
                f"field {spec.name!r} changed type from {type_name(spec.type)} to {type_name(after_spec.type)}"
            )
        if spec.required and not after_spec.required:
            changes.append(f"field {spec.name!r} became optional")
        if spec.private != after_spec.private:
            changes.append(f"field {spec.name!r} became {'private' if after_spec.private else 'public'}")
    new_derived = {feature.name: feature for feature in new.derived}
    for feature in old.derived:
        after_feature = new_derived.get(feature.name)
        if after_feature is None:
            changes.append(f"derived feature {feature.name!r} removed")
        elif after_feature != feature:
            changes.append(f"derived feature {feature.name!r} redefined")
    return changes


@dataclass(frozen=True)
class Registration:
    """What a registration request becomes: a new version, or an existing one unchanged."""

    version: int
    create: bool


def plan_registration(
    candidate: DatasetSchema, latest: DatasetSchema | None, stored: DatasetSchema | None
) -> Registration:
    """Decide the version ``candidate`` is registered as (see ``DatasetSchema.version``).

    ``latest`` is the dataset's newest stored version (None for a new dataset) and
    ``stored`` the stored schema at ``candidate.version`` when there is one.
    Raises :class:`SchemaError` for an impossible version and :class:`SchemaConflict`
    for a breaking change without a new version or a changed existing version.
    """
    if latest is None:
        if candidate.version not in (0, 1):
            raise SchemaError("version", "a new dataset starts at version 1")
        return Registration(1, create=True)
    if candidate.version == 0:
        if same_content(candidate, latest):
            return Registration(latest.version, create=False)
        changes = breaking_changes(latest, candidate)
        if changes:
            raise SchemaConflict(
                f"breaking change(s) to {latest.name} v{latest.version}: {'; '.join(changes)}; "
                f"register it as version {latest.version + 1} to make it a new version"
            )
        return Registration(latest.version + 1, create=True)
    if candidate.version == latest.version + 1:
        return Registration(candidate.version, create=True)
    if candidate.version > latest.version + 1:
        raise SchemaError("version", f"the next version of {latest.name} is {latest.version + 1}")
    if stored is not None and same_content(candidate, stored):
        return Registration(candidate.version, create=False)
    raise SchemaConflict(
        f"{candidate.name} v{candidate.version} exists with different content; versions are immutable"
    )
