"""Tensor decoding from every wire form, and the errors each bad form gets."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.proto.inference import grpc_service_pb2 as oip
from services.serving.errors import InvalidInput
from services.serving.tensors import (
    decode_bytes_elements,
    encode_bytes_elements,
    fill_contents,
    from_contents,
    from_json,
    from_raw,
    to_json,
    to_raw,
)


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"), ("INT64", "<i8"), ("BOOL", "?")],
)
def test_raw_numeric_tensors_are_read_in_place_with_their_shape(datatype: str, dtype: str) -> None:
    values = (np.arange(6) % 2 == 0) if datatype == "BOOL" else np.arange(6)
    array = np.asarray(values).astype(dtype).reshape(2, 3)
    tensor = from_raw("x", datatype, [2, 3], array.tobytes())
    assert tensor.data.shape == (2, 3)
    np.testing.assert_array_equal(tensor.data, array)


def test_raw_tensor_with_the_wrong_byte_count_names_the_input_and_both_sizes() -> None:
    with pytest.raises(InvalidInput, match=r"input 'features'.*needs 48 bytes.*got 40"):
        from_raw("features", "FP64", [2, 3], np.zeros(5).tobytes())


def test_raw_bytes_elements_round_trip_and_truncation_is_refused() -> None:
    raw = encode_bytes_elements([b"red", "gr\u00fcn", b""])
    tensor = from_raw("colour", "BYTES", [3], raw)
    assert tensor.data.tolist() == [b"red", "gr\u00fcn".encode(), b""]
    with pytest.raises(InvalidInput, match="ends before element 2"):
        decode_bytes_elements("colour", raw[:-4], 3)
    with pytest.raises(InvalidInput, match="past the end"):
        decode_bytes_elements("colour", raw[:-1] + b"\xff\xff\x00\x00", 3)
    with pytest.raises(InvalidInput, match="left over"):
        decode_bytes_elements("colour", raw + b"x", 3)


def test_a_huge_declared_bytes_shape_is_refused_before_allocating() -> None:
    with pytest.raises(InvalidInput, match="needs 1000000000000 BYTES elements"):
        from_raw("colour", "BYTES", [10**12], b"\x00\x00\x00\x00")


def test_contents_must_use_the_field_of_the_datatype() -> None:
    contents = oip.InferTensorContents(int64_contents=[1, 2])
    with pytest.raises(
        InvalidInput, match="FP64 carries its data in fp64_contents, but the request filled int64_contents"
    ):
        from_contents("features", "FP64", [1, 2], contents)


def test_contents_count_must_match_the_shape() -> None:
    contents = oip.InferTensorContents(fp64_contents=[1.0, 2.0, 3.0])
    with pytest.raises(InvalidInput, match=r"shape \[1, 2\] needs 2 elements, fp64_contents has 3"):
        from_contents("features", "FP64", [1, 2], contents)


def test_contents_bytes_and_numbers_decode() -> None:
    assert from_contents(
        "c", "BYTES", [2], oip.InferTensorContents(bytes_contents=[b"a", b"b"])
    ).data.tolist() == [
        b"a",
        b"b",
    ]
    tensor = from_contents("x", "INT32", [2, 1], oip.InferTensorContents(int_contents=[7, -1]))
    assert tensor.data.dtype == np.dtype("<i4") and tensor.data.tolist() == [[7], [-1]]


@pytest.mark.parametrize(
    ("shape", "message"),
    [([], "shape is empty"), ([-1, 4], "negative dimension")],
)
def test_shapes_that_cannot_hold_data_are_refused(shape: list[int], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_raw("features", "FP64", shape, b"")


def test_unsupported_datatypes_are_named() -> None:
    with pytest.raises(InvalidInput, match="datatype 'FP16' is not supported; supported: FP32, FP64"):
        from_raw("features", "FP16", [1], b"\x00\x00")


def test_json_data_may_be_flat_or_nested_and_is_type_checked() -> None:
    assert from_json("x", "FP64", [2, 2], [[1, 2.5], [3, 4]]).data.tolist() == [[1.0, 2.5], [3.0, 4.0]]
    assert from_json("x", "INT64", [3], [1, 2, 3]).data.dtype == np.int64
    assert from_json("c", "BYTES", [1], ["red"]).data.tolist() == [b"red"]
    with pytest.raises(InvalidInput, match="INT64 data must be integers"):
        from_json("x", "INT64", [2], [1, 2.5])
    with pytest.raises(InvalidInput, match="FP64 data must be numbers"):
        from_json("x", "FP64", [2], [1, "2"])
    with pytest.raises(InvalidInput, match="FP64 data must be numbers"):
        from_json("x", "FP64", [1], [True])
    with pytest.raises(InvalidInput, match="BYTES element 0 is int"):
        from_json("c", "BYTES", [1], [3])
    with pytest.raises(InvalidInput, match="mixes arrays and scalars"):
        from_json("x", "FP64", [2], [1, [2]])
    with pytest.raises(InvalidInput, match=r"shape \[3\] needs 3 elements, data has 2"):
        from_json("x", "FP64", [3], [1, 2])
    with pytest.raises(InvalidInput, match="does not fit in INT32"):
        from_json("x", "INT32", [1], [2**40])


def test_outputs_encode_to_raw_contents_and_json() -> None:
    probabilities = np.array([[0.25, 0.75]])
    assert np.frombuffer(to_raw("FP64", probabilities), "<f8").tolist() == [0.25, 0.75]
    labels = np.array(["1"], dtype=object)
    assert decode_bytes_elements("label", to_raw("BYTES", labels), 1).tolist() == [b"1"]
    contents = oip.InferTensorContents()
    fill_contents("BYTES", labels, contents)
    assert list(contents.bytes_contents) == [b"1"]
    assert to_json("FP64", probabilities) == [0.25, 0.75]
    assert to_json("BYTES", labels) == ["1"]
