"""How the templates write numbers, times and states (Jinja filters)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import jinja2
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.proto.mlops.v1 import registry_pb2


def when(value: Any) -> str:
    """An epoch in seconds, a protobuf timestamp or an ISO string as ``YYYY-MM-DD HH:MM:SS UTC``.

    >>> when(0.0), when(None), when(Timestamp(seconds=86400))
    ('1970-01-01 00:00:00 UTC', '', '1970-01-02 00:00:00 UTC')
    """
    if value is None or value == "":
        return ""
    if isinstance(value, Timestamp):
        if not value.seconds and not value.nanos:
            return ""
        moment = value.ToDatetime(tzinfo=UTC)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value)).astimezone(UTC)
        except ValueError:
            return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: Any, digits: int = 4) -> str:
    """A figure with ``digits`` significant digits; a dash when there is none.

    >>> number(0.912345), number(None), number(float("nan")), number(1234567)
    ('0.9123', '–', '–', '1.235e+06')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def signed(value: Any, digits: int = 4) -> str:
    """A difference or a margin, always with its sign.

    >>> signed(0.05), signed(-0.012), signed(None)
    ('+0.05', '-0.012', '–')
    """
    if value is None:
        return "–"
    return f"{value:+.{digits}g}"


def version_status(value: registry_pb2.VersionStatus.ValueType) -> str:
    """``VERSION_STATUS_PENDING_APPROVAL`` as ``pending approval``."""
    return registry_pb2.VersionStatus.Name(value).removeprefix("VERSION_STATUS_").replace("_", " ").lower()


def policy(value: registry_pb2.PromotionPolicy.ValueType) -> str:
    return registry_pb2.PromotionPolicy.Name(value).removeprefix("PROMOTION_POLICY_").lower()


def pretty_json(text: str) -> str:
    """A JSON document indented, or as it came when it is not JSON."""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except ValueError:
        return text


def install(env: jinja2.Environment) -> None:
    env.filters.update(
        when=when,
        number=number,
        signed=signed,
        version_status=version_status,
        policy=policy,
        pretty_json=pretty_json,
    )
