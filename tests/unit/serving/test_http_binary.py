"""The HTTP binary tensor extension's framing: what is accepted, and every refusal named."""

from __future__ import annotations

import numpy as np
import pytest

from services.serving import http_binary
from services.serving.errors import InvalidInput
from services.serving.tensors import from_raw


def test_binary_inputs_are_sliced_in_order_and_decode_as_raw_tensors() -> None:
    first, second = np.arange(6, dtype="<f8"), np.array([1, 2], dtype="<i4")
    binary = first.tobytes() + second.tobytes()
    raw = http_binary.slice_inputs([("a", 48), ("json", None), ("b", 8)], binary)
    assert from_raw("a", "FP64", [2, 3], raw["a"]).data.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert from_raw("b", "INT32", [2], raw["b"]).data.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("sizes", "binary", "phrase"),
    [
        ([("a", 16)], bytes(8), "input 'a': binary_data_size 16 runs past the binary data (8 bytes left)"),
        ([("a", 8)], bytes(12), "4 bytes left over after the binary inputs"),
        ([("a", None)], bytes(4), "no input declares parameters.binary_data_size"),
    ],
)
def test_binary_data_that_does_not_add_up_is_refused(
    sizes: list[tuple[str, int | None]], binary: bytes, phrase: str
) -> None:
    with pytest.raises(InvalidInput, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        http_binary.slice_inputs(sizes, binary)


@pytest.mark.parametrize("header", ["-1", "x", "100"])
def test_a_header_length_that_is_no_count_or_past_the_body_is_refused(header: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        http_binary.split_body(b"{}" + bytes(10), header)
    assert refused.value.field == http_binary.HEADER_LENGTH


@pytest.mark.parametrize("size", [-1, 1.5, True, "8"])
def test_a_binary_size_must_be_a_count(size: object) -> None:
    with pytest.raises(InvalidInput, match="binary_data_size must be a non-negative integer"):
        http_binary.binary_size("a", {"binary_data_size": size})


def test_outputs_are_binary_when_asked_for_all_or_each() -> None:
    assert http_binary.binary_outputs({}, []) == (False, {})
    assert http_binary.binary_outputs({"binary_data_output": True}, [("label", {"binary_data": False})]) == (
        True,
        {"label": False},
    )
    assert http_binary.binary_outputs({}, [("label", {"binary_data": True}), ("p", None)]) == (
        False,
        {"label": True, "p": False},
    )
    with pytest.raises(InvalidInput, match="outputs.label.parameters.binary_data must be a boolean"):
        http_binary.binary_outputs({}, [("label", {"binary_data": "yes"})])


def test_a_binary_response_says_where_its_json_ends() -> None:
    body, headers = http_binary.encode_response({"outputs": []}, [b"\x01\x02"])
    length = int(headers[http_binary.HEADER_LENGTH])
    assert body[:length] == b'{"outputs":[]}' and body[length:] == b"\x01\x02"
    assert http_binary.encode_response({"outputs": []}, []) == (b'{"outputs":[]}', {})
