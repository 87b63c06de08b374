"""Real fitted models and their registry records, for serving's domain tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from services.common.artifacts import sha256_hex
from services.common.flavors.skops import SklearnRuntime, SkopsFlavor
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

FEATURES = ["f0", "f1", "f2", "f3"]


@dataclass
class Fitted:
    estimator: Any
    signature: model_pb2.Signature
    X: np.ndarray

    @property
    def runtime(self) -> SklearnRuntime:
        """The estimator as the skops flavor loads it."""
        return SklearnRuntime(self.estimator)

    def version(
        self, name: str, number: int, tags: dict[str, str] | None = None
    ) -> tuple[registry_pb2.ModelVersion, bytes]:
        data = SkopsFlavor().save(self.estimator).data
        version = registry_pb2.ModelVersion(
            model_name=name,
            version=number,
            artifact=registry_pb2.Artifact(sha256=sha256_hex(data), size_bytes=len(data), format="skops"),
            signature=self.signature,
            tags=tags or {},
        )
        return version, data


def classifier_signature(n_features: int, classes: list[str], allow_nan: bool = False) -> model_pb2.Signature:
    return model_pb2.Signature(
        inputs=[
            model_pb2.TensorSpec(
                name="features", datatype="FP64", shape=[-1, n_features], allow_nan=allow_nan
            )
        ],
        outputs=[
            model_pb2.TensorSpec(name="probabilities", datatype="FP64", shape=[-1, len(classes)]),
            model_pb2.TensorSpec(name="label", datatype="BYTES", shape=[-1]),
        ],
        feature_names=[f"f{i}" for i in range(n_features)],
        classes=classes,
        task=model_pb2.TASK_CLASSIFICATION,
    )


def fit_classifier(seed: int = 0) -> Fitted:
    X, y = make_classification(
        n_samples=300, n_features=4, n_informative=3, n_redundant=0, n_classes=3, random_state=seed
    )
    labels = np.array(["0", "1", "2"], dtype=object)[y]
    estimator = LogisticRegression(max_iter=500).fit(X, labels)
    return Fitted(estimator, classifier_signature(4, ["0", "1", "2"]), X)


@pytest.fixture(scope="session")
def classifier() -> Fitted:
    return fit_classifier(0)


@pytest.fixture(scope="session")
def other_classifier() -> Fitted:
    """Same signature, different weights: tells two versions apart by their answers."""
    return fit_classifier(1)


@pytest.fixture(scope="session")
def regressor() -> Fitted:
    X, y = make_regression(n_samples=200, n_features=4, random_state=0)
    signature = model_pb2.Signature(
        inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, 4])],
        outputs=[model_pb2.TensorSpec(name="value", datatype="FP64", shape=[-1])],
        feature_names=FEATURES,
        task=model_pb2.TASK_REGRESSION,
    )
    return Fitted(LinearRegression().fit(X, y), signature, X)


@pytest.fixture(scope="session")
def categorical() -> Fitted:
    """The trainer's layout for text categories: an object matrix, categories as text."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=300)
    size = rng.normal(size=300)
    y = np.where((colour == "red") | (size > 1), "yes", "no")
    X = np.empty((300, 2), dtype=object)
    X[:, 0] = size
    X[:, 1] = colour
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numeric", "passthrough", [0]),
                        (
                            "categorical",
                            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                            [1],
                        ),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(X, y)
    signature = model_pb2.Signature(
        inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, 2], allow_nan=True)],
        feature_names=["size", "colour"],
        classes=["no", "yes"],
        task=model_pb2.TASK_CLASSIFICATION,
    )
    return Fitted(pipeline, signature, X)
