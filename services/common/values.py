"""Conversions between JSON scalars, protobuf ``FeatureValue`` and class labels.

Every service that compares labels (trainer, serving, monitor) goes through
:func:`label_text`, so ``1``, ``1.0`` and ``"1"`` name the same class everywhere.
"""

from __future__ import annotations

import math
import re

from services.common.proto.mlops.v1.model_pb2 import FeatureValue

Scalar = float | str | bool


def to_feature_value(value: Scalar) -> FeatureValue:
    """A ``FeatureValue`` from a JSON scalar (bool is checked before int: it is one)."""
    if isinstance(value, bool):
        return FeatureValue(bool_value=value)
    if isinstance(value, int | float):
        return FeatureValue(number_value=float(value))
    if isinstance(value, str):
        return FeatureValue(string_value=value)
    raise TypeError(f"not a scalar: {type(value).__name__}")


def from_feature_value(value: FeatureValue) -> Scalar | None:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def label_text(value: Scalar | FeatureValue | None) -> str:
    """The canonical text of a class label: integral numbers lose their ``.0``."""
    if isinstance(value, FeatureValue):
        value = from_feature_value(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return str(int(number))
        return repr(number)
    return value


MISSING_CATEGORY = "__missing__"
"""What a missing category becomes where a model needs text (river rows, category encoders)."""


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def printable(text: str) -> str:
    """``text`` in printable ASCII, anything else a caller sent escaped (for audit records
    and gRPC metadata, which takes printable ASCII only).

    >>> printable("churn\\n")
    'churn\\\\x0a'
    """
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
