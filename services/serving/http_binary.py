"""The binary tensor extension of the Open Inference Protocol's HTTP/JSON (Triton's
``binary_data``), which tritonclient's and kserve's HTTP clients use by default.

A request whose header ``Inference-Header-Content-Length`` is N carries its JSON inference
header in the body's first N bytes; the rest is the data of every input whose
``parameters.binary_data_size`` is set, one after another in the order of ``inputs``, in
the raw form of gRPC's ``raw_input_contents`` (row-major little-endian; BYTES elements each
prefixed by a 4-byte little-endian length). Outputs are returned the same way when the
request asks, per output (``outputs[i].parameters.binary_data``) or for all of them (the
request parameter ``binary_data_output``): the response's header then says where its JSON
ends, and each binary output names its ``binary_data_size`` instead of carrying ``data``.

>>> split_body(b'{"inputs": []}' + bytes(8), "14")
(b'{"inputs": []}', b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00')
>>> split_body(b"{}", "9")
Traceback (most recent call last):
...
services.serving.errors.InvalidInput: Inference-Header-Content-Length: 9 is past the body's end (2 bytes)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from services.serving.errors import InvalidInput

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
TRANSPORT_PARAMETERS = frozenset({BINARY_DATA_OUTPUT})
"""Request parameters that shape the HTTP answer, not the inference."""


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON inference header and the binary data after it."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit():
        raise InvalidInput(f"{HEADER_LENGTH}: not a byte count: {header_length[:40]!r}", field=HEADER_LENGTH)
    length = int(header_length)
    if length > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH}: {length} is past the body's end ({len(body)} bytes)", field=HEADER_LENGTH
        )
    return body[:length], body[length:]


def binary_size(name: str, parameters: Mapping[str, Any] | None) -> int | None:
    """An input's ``binary_data_size``, or None when its data is JSON."""
    size = (parameters or {}).get(BINARY_DATA_SIZE)
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(
            f"input '{name}': parameters.{BINARY_DATA_SIZE} must be a non-negative integer",
            field=f"inputs.{name}.parameters.{BINARY_DATA_SIZE}",
        )
    return size


def slice_inputs(sizes: Sequence[tuple[str, int | None]], binary: bytes) -> dict[str, bytes]:
    """Each binary input's bytes, in the order of ``inputs``; every byte must be claimed."""
    out: dict[str, bytes] = {}
    offset = 0
    view = memoryview(binary)
    for name, size in sizes:
        if size is None:
            continue
        if offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}': {BINARY_DATA_SIZE} {size} runs past the binary data "
                f"({len(binary) - offset} bytes left)",
                field=f"inputs.{name}.parameters.{BINARY_DATA_SIZE}",
            )
        out[name] = bytes(view[offset : offset + size])
        offset += size
    if offset != len(binary):
        if not out:
            raise InvalidInput(
                f"the body has {len(binary)} bytes after its JSON header, but no input declares "
                f"parameters.{BINARY_DATA_SIZE}",
                field=HEADER_LENGTH,
            )
        raise InvalidInput(
            f"{len(binary) - offset} bytes left over after the binary inputs", field=HEADER_LENGTH
        )
    return out


def binary_outputs(
    request_parameters: Mapping[str, Any], outputs: Sequence[tuple[str, Mapping[str, Any] | None]]
) -> tuple[bool, dict[str, bool]]:
    """Whether outputs are answered in binary: the default for every output (the request
    parameter ``binary_data_output``), and the choice of each output the request names."""
    default = _flag(request_parameters, BINARY_DATA_OUTPUT, "parameters")
    named = {
        name: _flag(parameters or {}, BINARY_DATA, f"outputs.{name}.parameters", default=default)
        for name, parameters in outputs
    }
    return default, named


def _flag(parameters: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(
            f"{where}.{key} must be a boolean, got {type(value).__name__}", field=f"{where}.{key}"
        )
    return value


def encode_response(header: dict[str, Any], binaries: Sequence[bytes]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers: JSON alone, or JSON then the binary outputs."""
    body = json.dumps(header, separators=(",", ":")).encode()
    if not binaries:
        return body, {}
    return body + b"".join(binaries), {HEADER_LENGTH: str(len(body))}
