"""Data every flavor's tests fit their models on: two classes, three classes, a regression,
with missing values where the library takes them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from services.common.artifacts import sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import Runtime, StoredArtifact
from services.common.proto.mlops.v1 import model_pb2


@dataclass(frozen=True)
class Data:
    X: np.ndarray
    y: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """Rows the tests predict: unseen ones."""
        return np.random.default_rng(5).normal(size=(64, self.X.shape[1]))

    @property
    def gappy_rows(self) -> np.ndarray:
        """:attr:`rows` with missing values, for models that take them."""
        rows = self.rows
        rows[3, 1] = rows[7, 4] = np.nan
        return rows


@pytest.fixture(scope="package")
def binary() -> Data:
    X, y = make_classification(n_samples=400, n_features=5, n_informative=3, n_redundant=0, random_state=0)
    return Data(X, y)


@pytest.fixture(scope="package")
def multiclass() -> Data:
    X, y = make_classification(
        n_samples=400, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=1
    )
    return Data(X, y)


@pytest.fixture(scope="package")
def regression() -> Data:
    X, y = make_regression(n_samples=400, n_features=5, noise=0.1, random_state=2)
    return Data(X, y)


def round_trip(
    flavor_name: str, model: object, signature: model_pb2.Signature | None = None
) -> tuple[bytes, Runtime]:
    """``model`` saved, verified as the registry verifies an upload, and loaded as serving loads it."""
    saving = flavor(flavor_name)
    assert saving.handles(model)
    data = saving.save(model).data
    saving.verify(data)
    return data, saving.load(StoredArtifact(data, sha256_hex(data), signature or model_pb2.Signature()))
