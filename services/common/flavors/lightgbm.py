"""``lightgbm``: LightGBM boosters in LightGBM's text model format.

The text format (``Booster.model_to_string``, ``save_model``) is a header of ``key=value``
lines, the trees, and the training parameters: nothing executable, so loading it is
parsing. Bytes that are not UTF-8 text starting with ``tree`` (a pickled
``LGBMClassifier``, say) are refused before LightGBM sees them. An ``LGBMClassifier`` or
``LGBMRegressor`` is saved as its booster, which is what predicts.

What the header says: the objective (``binary``, ``multiclass`` and ``multiclassova`` are
classifiers, the rest regressors), the number of features and classes, and the feature
names when the model was trained with them (LightGBM's ``Column_<i>`` defaults are no
names). Classes are positions (the booster does not keep the labels; the scikit-learn
wrapper's sorted ``classes_`` are those positions), so a version's signature names them.
Per-row contributions are LightGBM's own exact TreeSHAP (``pred_contrib``), in the margin.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.common.artifacts import ArtifactError
from services.common.flavors.base import (
    Flavor,
    InferredSignature,
    Matrix,
    Runtime,
    SavedArtifact,
    StoredArtifact,
    described,
)
from services.common.flavors.explain import Contributions, Explainer, bias_last
from services.common.proto.mlops.v1 import model_pb2

CLASSIFIER_OBJECTIVES = frozenset({"binary", "multiclass", "multiclassova"})
MAX_HEADER_LINES = 64


def _header(text: str) -> dict[str, str]:
    """The ``key=value`` lines before the first tree."""
    header: dict[str, str] = {}
    for line in text.splitlines()[:MAX_HEADER_LINES]:
        if line.startswith("Tree="):
            break
        key, sep, value = line.partition("=")
        if sep:
            header[key] = value
    return header


def booster_header(booster: Any) -> dict[str, str]:
    """The header of a booster in hand (one trained in this process): its objective and classes."""
    return _header(booster.model_to_string(num_iteration=1))


def _parsed(data: bytes) -> tuple[Any, dict[str, str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError("not a lightgbm artifact: LightGBM's text model format is UTF-8 text") from None
    if not text.startswith("tree"):
        raise ArtifactError("not a lightgbm artifact: LightGBM's text model format starts with 'tree'")
    import lightgbm  # imported on use: the registry and CLI import this package without it

    return lightgbm.Booster(model_str=text), _header(text)


class LightGBMRuntime(Runtime):
    flavor = "lightgbm"

    def __init__(self, booster: Any, header: dict[str, str]):
        self.booster = booster
        self.objective = header.get("objective", "").split(" ")[0]
        self.family = f"Booster({self.objective or 'custom objective'})"
        self.n_features_in_ = int(booster.num_feature())
        if self.objective in CLASSIFIER_OBJECTIVES:
            classes = 2 if self.objective == "binary" else int(header.get("num_class", "0"))
            self.task = model_pb2.TASK_CLASSIFICATION
            self.classes_ = np.array([str(i) for i in range(classes)], dtype=object)
            self.positional_classes = True
        else:
            self.task = model_pb2.TASK_REGRESSION
        names = [str(n) for n in booster.feature_name()]
        self.feature_names = () if names == [f"Column_{i}" for i in range(len(names))] else tuple(names)

    @property
    def has_proba(self) -> bool:
        return self.classes_ is not None

    def predict_proba(self, matrix: Matrix) -> Matrix:
        value = np.asarray(self.booster.predict(matrix), dtype=np.float64)
        return np.column_stack([1.0 - value, value]) if value.ndim == 1 else value

    def predict(self, matrix: Matrix) -> Matrix:
        if self.classes_ is not None:
            return np.asarray(self.classes_[np.argmax(self.predict_proba(matrix), axis=1)])
        return np.asarray(self.booster.predict(matrix), dtype=np.float64).reshape(-1)

    def explainer(self) -> Explainer:
        return _BoosterContributions(self.booster, self.n_features_in_ or 0)


class _BoosterContributions:
    """LightGBM's exact TreeSHAP values: per class, ``n_features`` columns then the bias."""

    def __init__(self, booster: Any, n_features: int):
        self._booster = booster
        self._width = n_features + 1

    def explain(self, matrix: Matrix) -> Contributions:
        raw = np.asarray(self._booster.predict(matrix, pred_contrib=True), dtype=np.float64)
        per_output = raw.reshape(len(raw), -1, self._width)  # [rows, outputs, features + 1]
        return bias_last(per_output)


class LightGBMFlavor(Flavor):
    name = "lightgbm"
    platform = "lightgbm"
    packages = ("lightgbm", "numpy")
    modules = ("lightgbm.",)
    saved_as = "LightGBM's text model format (Booster.model_to_string, or save_model)"

    def handles(self, model: object) -> bool:
        return isinstance(model, LightGBMRuntime) or super().handles(model)

    def save(self, model: Any, *, signing_key: bytes | None = None) -> SavedArtifact:
        if isinstance(model, LightGBMRuntime):
            booster = model.booster
        else:
            booster = model.booster_ if hasattr(model, "booster_") else model
        return SavedArtifact(booster.model_to_string().encode())

    def check(self, data: bytes, *, signature_hmac: str, signing_key: bytes | None) -> None:
        LightGBMRuntime(*_parsed(data))

    def open(self, artifact: StoredArtifact, *, signing_key: bytes | None) -> Runtime:
        return LightGBMRuntime(*_parsed(artifact.data))

    def describe(self, data: bytes) -> InferredSignature:
        runtime = LightGBMRuntime(*_parsed(data))
        return described(runtime, runtime.feature_names, "the booster")
