"""Open Inference Protocol tensors to and from numpy, with no per-element Python loops
except for BYTES (whose elements are variable-length by nature).

A tensor arrives in one of three forms: typed ``contents`` (gRPC), one entry of
``raw_input_contents`` (gRPC; flattened, row-major, little-endian, BYTES elements each
prefixed by a 4-byte little-endian length), or a JSON ``data`` array (HTTP). Each form
is checked against the declared datatype and shape before anything is built from it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.proto.inference import grpc_service_pb2 as oip
from services.serving.errors import InvalidInput

# Datatypes a tabular model needs, with their little-endian wire dtype.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("?"),
    "BYTES": np.dtype(object),
}
NUMERIC = frozenset({"FP32", "FP64", "INT32", "INT64", "BOOL"})
FLOATS = frozenset({"FP32", "FP64"})

# The typed-contents field that carries each datatype.
CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
_ALL_CONTENTS_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """A decoded input tensor: its declared name, datatype and shape, and its data shaped so."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]


def check_datatype(name: str, datatype: str) -> np.dtype[Any]:
    dtype = WIRE_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"input '{name}': datatype {datatype!r} is not supported; supported: {', '.join(WIRE_DTYPES)}"
        )
    return dtype


def element_count(name: str, shape: Sequence[int]) -> int:
    """The number of elements ``shape`` declares; a negative dimension is an error."""
    if not shape:
        raise InvalidInput(f"input '{name}': shape is empty; a tensor needs at least one dimension")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def from_contents(
    name: str, datatype: str, shape: Sequence[int], contents: oip.InferTensorContents
) -> Tensor:
    """A tensor from gRPC typed contents, which must use the field of its datatype."""
    check_datatype(name, datatype)
    expected_field = CONTENTS_FIELD[datatype]
    for field in _ALL_CONTENTS_FIELDS:
        if field != expected_field and len(getattr(contents, field)):
            raise InvalidInput(
                f"input '{name}': datatype {datatype} carries its data in {expected_field}, "
                f"but the request filled {field}"
            )
    values = getattr(contents, expected_field)
    count = element_count(name, shape)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements, {expected_field} has {len(values)}"
        )
    if datatype == "BYTES":
        data = np.empty(count, dtype=object)
        data[:] = list(values)
    else:
        data = np.array(values, dtype=WIRE_DTYPES[datatype])
    return Tensor(name, datatype, tuple(shape), data.reshape(shape))


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """A tensor from one ``raw_input_contents`` entry (numpy ``frombuffer``, no copy)."""
    dtype = check_datatype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        if count > len(raw) // _LENGTH.size:
            raise InvalidInput(
                f"input '{name}': shape {list(shape)} needs {count} BYTES elements, "
                f"but raw_input_contents has only {len(raw)} bytes"
            )
        data = decode_bytes_elements(name, raw, count)
    else:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"input '{name}': shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes "
                f"of raw_input_contents, got {len(raw)}"
            )
        data = np.frombuffer(raw, dtype=dtype)
    return Tensor(name, datatype, tuple(shape), data.reshape(shape))


def from_json(name: str, datatype: str, shape: Sequence[int], data: Any) -> Tensor:
    """A tensor from the HTTP/JSON protocol's ``data``: flat or nested in row-major order."""
    dtype = check_datatype(name, datatype)
    count = element_count(name, shape)
    flat = _flatten_json(name, data)
    if len(flat) != count:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {count} elements, data has {len(flat)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        for i, value in enumerate(flat):
            if not isinstance(value, str):
                raise InvalidInput(
                    f"input '{name}': BYTES element {i} is {type(value).__name__}, not a string"
                )
            array[i] = value.encode()
        return Tensor(name, datatype, tuple(shape), array.reshape(shape))
    kinds = {type(v) for v in flat}
    if datatype == "BOOL":
        if kinds - {bool}:
            raise InvalidInput(f"input '{name}': BOOL data must be true/false")
    elif kinds - {int, float} or bool in kinds:
        raise InvalidInput(f"input '{name}': {datatype} data must be numbers")
    elif datatype not in FLOATS and float in kinds:
        raise InvalidInput(f"input '{name}': {datatype} data must be integers")
    try:
        array = np.array(flat, dtype=dtype.newbyteorder("="))
    except OverflowError:
        raise InvalidInput(f"input '{name}': a value does not fit in {datatype}") from None
    return Tensor(name, datatype, tuple(shape), array.reshape(shape))


def _flatten_json(name: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInput(f"input '{name}': data must be an array")
    if not data or not isinstance(data[0], list):
        if any(isinstance(v, list | dict) for v in data):
            raise InvalidInput(f"input '{name}': data mixes arrays and scalars")
        return data
    flat: list[Any] = []
    for row in data:
        flat.extend(_flatten_json(name, row))
    return flat


def decode_bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray[Any, Any]:
    """BYTES elements from the raw form: each a 4-byte little-endian length, then its bytes."""
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInput(f"input '{name}': raw BYTES data ends before element {i} of {count}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(f"input '{name}': raw BYTES element {i} claims {length} bytes past the end")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInput(
            f"input '{name}': {len(view) - offset} bytes left over after {count} BYTES elements"
        )
    return out


def encode_bytes_elements(values: Sequence[bytes | str]) -> bytes:
    """The raw form of BYTES elements (what :func:`decode_bytes_elements` reads).

    Outputs repeat a few values (class labels), so each distinct value is prefixed once.
    """
    prefixed: dict[bytes | str, bytes] = {}
    parts = []
    for value in values:
        part = prefixed.get(value)
        if part is None:
            encoded = value.encode() if isinstance(value, str) else value
            part = prefixed[value] = _LENGTH.pack(len(encoded)) + encoded
        parts.append(part)
    return b"".join(parts)


def to_raw(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    """An output tensor's ``raw_output_contents`` entry."""
    if datatype == "BYTES":
        return encode_bytes_elements(array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=WIRE_DTYPES[datatype]).tobytes()


def fill_contents(datatype: str, array: np.ndarray[Any, Any], contents: oip.InferTensorContents) -> None:
    """Write an output tensor into typed ``contents``."""
    values = array.ravel().tolist()
    if datatype == "BYTES":
        contents.bytes_contents.extend(v.encode() if isinstance(v, str) else v for v in values)
    else:
        getattr(contents, CONTENTS_FIELD[datatype]).extend(values)


def to_json(datatype: str, array: np.ndarray[Any, Any]) -> list[Any]:
    """An output tensor's flat JSON ``data``."""
    values: list[Any] = array.ravel().tolist()
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    return values
