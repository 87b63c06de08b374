"""The server accepts parameter arrays of the model's shape, finite, and nothing else."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from services.federation import updates
from services.federation.updates import RefusedUpdate, check_aggregate, check_masked, check_update

SHAPES = [(1, 3), (1,)]


def test_doctests() -> None:
    assert doctest.testmod(updates).failed == 0


def test_the_models_arrays_pass() -> None:
    check_update([np.ones((1, 3)), np.zeros(1)], SHAPES)


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ([np.ones((1, 3))], "1 arrays, the model has 2"),
        ([np.ones((1, 3)), np.zeros(1), np.zeros(1)], "3 arrays"),
        ([np.ones((3, 1)), np.zeros(1)], "array 0 has shape (3, 1)"),
        ([np.ones((1, 3)), [0.0]], "array 1 is a list"),
        ([np.ones((1, 3), dtype=np.int64), np.zeros(1)], "not floating point"),
        ([np.ones((1, 3)), np.array([np.inf])], "array 1 holds 1 NaN or infinite"),
        ([np.full((1, 3), np.nan), np.zeros(1)], "array 0 holds 3 NaN"),
        ([np.full((1, 3), 1e9), np.zeros(1)], "beyond"),
        # A site's rows, sent instead of parameters, are refused by shape.
        ([np.ones((500, 3)), np.zeros(500)], "array 0 has shape (500, 3)"),
    ],
)
def test_anything_else_is_refused_with_the_reason(arrays: list[object], reason: str) -> None:
    with pytest.raises(RefusedUpdate) as caught:
        check_update(arrays, SHAPES)
    assert reason in str(caught.value)


def test_masked_vectors_are_integers_below_the_modulus_in_the_models_shapes() -> None:
    good = [np.array([7]), np.array([[1, 2, 3]]), np.array([4])]
    check_masked(good, SHAPES, modulus=2**32)
    with pytest.raises(RefusedUpdate, match="2 arrays, the masked vector has 3"):
        check_masked(good[1:], SHAPES, modulus=2**32)
    with pytest.raises(RefusedUpdate, match=r"array 1 has shape \(1, 2\)"):
        check_masked([good[0], np.array([[1, 2]]), good[2]], SHAPES, modulus=2**32)
    with pytest.raises(RefusedUpdate, match="not integers"):
        check_masked([good[0], np.ones((1, 3)), good[2]], SHAPES, modulus=2**32)
    with pytest.raises(RefusedUpdate, match="outside"):
        check_masked([good[0], np.array([[1, 2, 2**32]]), good[2]], SHAPES, modulus=2**32)
    with pytest.raises(RefusedUpdate, match="outside"):
        check_masked([good[0], np.array([[1, -2, 3]]), good[2]], SHAPES, modulus=2**32)


def test_the_aggregate_is_checked_like_an_update() -> None:
    with pytest.raises(RefusedUpdate, match="the aggregate: array 0 holds"):
        check_aggregate([np.full((1, 3), np.nan), np.zeros(1)], SHAPES)
