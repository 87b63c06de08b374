"""Path and query parameters the routers share, and the parsing of the structured ones
(``tag=key=value``, ``metric=accuracy>=0.9``, ``status=VERSION_STATUS_READY``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from services.common.clients.registry import parse_metric_filter
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.errors import InvalidArgument

ModelName = Annotated[str, Path(description="The model's name.", max_length=1024)]
AliasName = Annotated[
    str, Path(description="An alias such as production, staging or candidate.", max_length=1024)
]
VersionNumber = Annotated[int, Path(ge=1, le=2**63 - 1, description="The version number.")]
PageSize = Annotated[int, Query(ge=0, le=2**31 - 1, description="0: the server's default.")]
PageToken = Annotated[str, Query(max_length=4096, description="next_page_token of the previous page.")]
Tags = Annotated[list[str], Query(description="key=value; every one must match.")]


def parse_tags(values: list[str], field: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep:
            raise InvalidArgument(f"{field}: expected key=value, got {value[:64]!r}", field=field)
        tags[key] = text
    return tags


def parse_metric_filters(values: list[str]) -> list[registry_pb2.MetricFilter]:
    try:
        return [parse_metric_filter(value) for value in values]
    except ValueError as exc:
        raise InvalidArgument(f"metric: {exc}", field="metric") from None


def parse_status(name: str) -> registry_pb2.VersionStatus.ValueType:
    if not name:
        return registry_pb2.VERSION_STATUS_UNSPECIFIED
    try:
        return registry_pb2.VersionStatus.Value(name)
    except ValueError:
        raise InvalidArgument(
            f"status: one of {', '.join(registry_pb2.VersionStatus.keys())}", field="status"
        ) from None
