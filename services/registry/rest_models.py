"""JSON shapes of the REST mirror, derived from the protobuf messages themselves.

Each shape is a pydantic model built from a message's descriptor, in the canonical proto3
JSON mapping (field names as in the .proto, enums by name, timestamps in RFC 3339). Built
rather than written by hand, they cannot drift from the contract when a field is added;
they exist so the OpenAPI document describes every field and bad JSON is refused with its
location before it reaches the registry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

from services.common.proto.mlops.v1 import model_pb2, registry_pb2, runs_pb2
from services.registry.errors import InvalidArgument
from services.registry.store import Page

MAX_STRING = 100_000
MAX_ITEMS = 10_000

_INTEGER_RANGES = {
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
}

# What the OpenAPI document says about the fields whose meaning is not obvious.
DESCRIPTIONS = {
    "SetAliasRequest.expected_version": (
        "Compare-and-set: 0 sets unconditionally, -1 only if the alias is unset, N only if it points at N "
        "(otherwise 409 and nothing changes)."
    ),
    "DeleteAliasRequest.expected_version": "When non-zero: delete only if the alias points at this version.",
    "RollbackRequest.alias": "The alias to move back; empty means production.",
    "RollbackRequest.expected_version": "When non-zero: roll back only if the alias still points at it.",
    "ReviewVersionRequest.comment": "Required when rejecting.",
    "UpdateModelRequest.promotion_policy": "PROMOTION_POLICY_UNSPECIFIED leaves the policy as it is.",
    "UpdateModelRequest.description": "Unset: left as it is.",
    "VersionMetadata.model_name": "Optional; must name the model in the path when given.",
    "VersionMetadata.signature_hmac": "For signed flavors (river-hmac): hex HMAC-SHA256 of the artifact by the trainer.",
    "Artifact.sha256": "SHA-256 of the artifact's bytes, 64 lowercase hex characters.",
    "Artifact.format": "The artifact's flavor: skops, river-hmac (only with a valid signature_hmac), xgboost, "
    "lightgbm or onnx. The registry verifies the bytes as that flavor before it stores the version.",
    "Model.aliases": "Alias -> version number.",
    "AuditRecord.before_json": "The resource's relevant state before the change, as a JSON object.",
    "AuditRecord.after_json": "The resource's relevant state after the change, as a JSON object.",
}

_shapes: dict[str, type[BaseModel]] = {}


class Shape(BaseModel):
    """Unknown fields are refused, as protobuf's JSON parser refuses them."""

    model_config = ConfigDict(extra="forbid")


def _scalar_type(field: FieldDescriptor) -> Any:
    if field.type in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[field.type]
        return Annotated[int, Field(ge=low, le=high)]
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float
    if field.type == FieldDescriptor.TYPE_BOOL:
        return bool
    if field.type == FieldDescriptor.TYPE_STRING:
        return Annotated[str, Field(max_length=MAX_STRING)]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return Annotated[str, Field(max_length=MAX_STRING, description="base64")]
    if field.enum_type is not None:
        return cast(Any, Literal)[tuple(value.name for value in field.enum_type.values)]
    message = field.message_type
    assert message is not None, f"{field.full_name} has no scalar or message type"
    if message.full_name == "google.protobuf.Timestamp":
        return AwareDatetime
    return shape(message)


def _field(message: Descriptor, field: FieldDescriptor) -> tuple[Any, Any]:
    description = DESCRIPTIONS.get(f"{message.name}.{field.name}")
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = _scalar_type(field.message_type.fields_by_name["key"])
        value = _scalar_type(field.message_type.fields_by_name["value"])
        return cast(Any, dict)[key, value], Field(
            default_factory=dict, max_length=MAX_ITEMS, description=description
        )
    kind = _scalar_type(field)
    if field.is_repeated:
        return cast(Any, list)[kind], Field(
            default_factory=list, max_length=MAX_ITEMS, description=description
        )
    if field.message_type is not None or field.has_presence:
        return kind | None, Field(None, description=description)
    default = field.enum_type.values[0].name if field.enum_type is not None else field.default_value
    return kind, Field(default, description=description)


def shape(
    message: Descriptor, *, name: str | None = None, exclude: frozenset[str] = frozenset()
) -> type[BaseModel]:
    """The pydantic model of ``message`` (without the ``exclude`` fields, under ``name``)."""
    key = name or message.name
    if key not in _shapes:
        fields = {f.name: _field(message, f) for f in message.fields if f.name not in exclude}
        _shapes[key] = create_model(key, __base__=Shape, **fields)  # type: ignore[call-overload]
    return _shapes[key]


def body(message: Descriptor, *path_fields: str) -> type[BaseModel]:
    """A request body: the request message without the fields the URL path carries."""
    return shape(message, name=message.name.removesuffix("Request") + "Body", exclude=frozenset(path_fields))


S = TypeVar("S", bound=BaseModel)
M = TypeVar("M", bound=Message)


def from_proto(kind: type[S], message: Message) -> S:
    return kind.model_validate(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def to_proto(value: BaseModel, message: M, field: str) -> M:
    """Fill ``message`` from a validated body; what protobuf still refuses is bad input."""
    data: dict[str, Any] = value.model_dump(mode="json", exclude_none=True)
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, ValueError) as exc:
        raise InvalidArgument(f"{field}: {exc}", field=field) from None
    return message


R = registry_pb2.DESCRIPTOR.message_types_by_name
Model = shape(R["Model"])
ModelVersion = shape(R["ModelVersion"])
ModelSpec = shape(model_pb2.DESCRIPTOR.message_types_by_name["ModelSpec"])
ListModels = shape(R["ListModelsResponse"], name="ModelList")
ListVersions = shape(R["ListModelVersionsResponse"], name="VersionList")
RollbackResult = shape(R["RollbackResponse"], name="RollbackResult")
LineageResult = shape(R["LineageResponse"], name="LineageResult")
AliasHistory = shape(R["ListAliasHistoryResponse"], name="AliasHistory")
SpecList = shape(R["ListModelSpecsResponse"], name="SpecList")
AuditLog = shape(R["ListAuditRecordsResponse"], name="AuditLog")
VersionMetadata = shape(R["VersionMetadata"])
Team = shape(R["Team"])
TeamList = shape(R["ListTeamsResponse"], name="TeamList")
TokenInfo = shape(R["TokenInfo"])
CreatedToken = shape(R["CreateTokenResponse"], name="CreatedToken")
TokenList = shape(R["ListTokensResponse"], name="TokenList")
RevokedList = shape(R["ListRevokedTokensResponse"], name="RevokedList")
Run = shape(runs_pb2.DESCRIPTOR.message_types_by_name["Run"])
RunList = shape(runs_pb2.DESCRIPTOR.message_types_by_name["ListRunsResponse"], name="RunList")

CreateModelBody = body(R["CreateModelRequest"])
UpdateModelBody = body(R["UpdateModelRequest"], "name")
SetAliasBody = body(R["SetAliasRequest"], "model_name", "alias")
ReviewBody = body(R["ReviewVersionRequest"], "model_name", "version")
ArchiveBody = body(R["ArchiveVersionRequest"], "model_name", "version")
RollbackBody = body(R["RollbackRequest"], "model_name")
CreateTeamBody = body(R["CreateTeamRequest"])
MemberBody = shape(R["TeamMemberRequest"], name="MemberBody", exclude=frozenset({"team", "subject"}))
CreateTokenBody = body(R["CreateTokenRequest"])
RevokeTokenBody = body(R["RevokeTokenRequest"], "id")


def paged(shape: type[S], response: type[Message], items: str, page: Page[Any]) -> S:
    """One page of a list as its REST shape: the items under ``items``, and the next page's token."""
    return from_proto(shape, response(**{items: page.items, "next_page_token": page.next_page_token}))
