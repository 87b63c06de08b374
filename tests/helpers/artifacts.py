"""Artifacts made and opened the way the platform does, through their flavors."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression

from services.common.artifacts import sha256_hex
from services.common.flavors import flavor, flavor_of
from services.common.flavors.base import Runtime, StoredArtifact
from services.common.flavors.skops import SkopsFlavor
from services.common.proto.mlops.v1 import model_pb2


def artifact_of(model: Any, *, signing_key: bytes | None = None) -> bytes:
    """``model`` saved by the flavor that saves it (skops for scikit-learn ...)."""
    return flavor_of(model).save(model, signing_key=signing_key).data


def opened(
    artifact_format: str,
    data: bytes,
    signature: model_pb2.Signature | None = None,
    params: Mapping[str, str] | None = None,
    *,
    signing_key: bytes | None = None,
) -> Runtime:
    """``data`` loaded by its flavor, as serving and the trainer load it (digest first)."""
    stored = StoredArtifact(data, sha256_hex(data), signature or model_pb2.Signature(), dict(params or {}))
    return flavor(artifact_format).load(stored, signing_key=signing_key)


def _linear(rng: np.random.Generator, columns: int) -> bytes:
    return SkopsFlavor().save(LinearRegression().fit(rng.normal(size=(2, columns)), rng.normal(size=2))).data


def random_artifact(size: int = 1000) -> bytes:
    """A real skops artifact (the registry verifies every upload) of at least ``size`` bytes,
    never the same twice: a linear model with one random float64 weight per 8 bytes."""
    return _linear(np.random.default_rng(), max(1, size // 8))


@functools.cache
def model_bytes(tag: str) -> bytes:
    """A small skops artifact of its own for each ``tag``, the same bytes every time it is asked for."""
    return _linear(np.random.default_rng(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big")), 2)
