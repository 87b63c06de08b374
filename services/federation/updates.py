"""What the server accepts from a site: parameter arrays of the model's shape, nothing else.

Every update is hostile until checked. In the clear (secure aggregation off) an update
must be exactly the model's arrays: the right count, shapes and floating dtype, every
value finite and within a bound. Under secure aggregation the server never sees an
update, only a masked vector (a weight factor followed by the quantized arrays, plus
masks that cancel in the sum); it can still refuse one of the wrong count, shape or
dtype, or with entries outside the masking modulus. A refusal carries the reason, which
the run records against the site. No I/O, no Flower.

Examples
--------
>>> import numpy as np
>>> shapes = [(1, 3), (1,)]
>>> check_update([np.zeros((1, 3)), np.zeros(1)], shapes)
>>> check_update([np.zeros((1, 4)), np.zeros(1)], shapes)
Traceback (most recent call last):
...
services.federation.updates.RefusedUpdate: array 0 has shape (1, 4), the model's is (1, 3)
>>> check_update([np.array([[0.0, np.nan, 0.0]]), np.zeros(1)], shapes)
Traceback (most recent call last):
...
services.federation.updates.RefusedUpdate: array 0 holds 1 NaN or infinite value(s)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_ABS_PARAMETER = 1e6
"""Larger parameters are not a model anyone trained on sane data: refused, not averaged."""


class RefusedUpdate(ValueError):
    """An update the server will not aggregate; ``str()`` is the reason."""


def _check_structure(arrays: Sequence[Any], shapes: Sequence[tuple[int, ...]], what: str) -> None:
    if len(arrays) != len(shapes):
        raise RefusedUpdate(f"{len(arrays)} arrays, the {what} has {len(shapes)}")
    for i, (array, shape) in enumerate(zip(arrays, shapes, strict=True)):
        if not isinstance(array, np.ndarray):
            raise RefusedUpdate(f"array {i} is a {type(array).__name__}, not an array")
        if array.shape != tuple(shape):
            raise RefusedUpdate(f"array {i} has shape {array.shape}, the {what}'s is {tuple(shape)}")


def check_update(arrays: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> None:
    """Refuse anything but finite floating arrays of exactly ``shapes``."""
    _check_structure(arrays, shapes, "model")
    for i, array in enumerate(arrays):
        if array.dtype.kind != "f":
            raise RefusedUpdate(f"array {i} has dtype {array.dtype}, not floating point")
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise RefusedUpdate(f"array {i} holds {bad} NaN or infinite value(s)")
        if array.size and float(np.max(np.abs(array))) > MAX_ABS_PARAMETER:
            raise RefusedUpdate(f"array {i} has a value beyond +/-{MAX_ABS_PARAMETER:g}")


def masked_shapes(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The shapes of a SecAgg+ masked vector: the weight factor, then the model's arrays."""
    return [(1,), *(tuple(s) for s in shapes)]


def check_masked(arrays: Sequence[Any], shapes: Sequence[tuple[int, ...]], modulus: int) -> None:
    """Refuse a masked vector that is not integers in ``[0, modulus)`` of the model's shapes."""
    _check_structure(arrays, masked_shapes(shapes), "masked vector")
    for i, array in enumerate(arrays):
        if array.dtype.kind not in "iu":
            raise RefusedUpdate(f"masked array {i} has dtype {array.dtype}, not integers")
        if array.size and (int(array.min()) < 0 or int(array.max()) >= modulus):
            raise RefusedUpdate(f"masked array {i} has entries outside [0, {modulus})")


def check_aggregate(arrays: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> None:
    """The aggregate itself, before it becomes the global model, passes the same test."""
    try:
        check_update(arrays, shapes)
    except RefusedUpdate as exc:
        raise RefusedUpdate(f"the aggregate: {exc}") from None
