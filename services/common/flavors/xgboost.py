"""``xgboost``: XGBoost boosters in XGBoost's own model format (UBJSON, or JSON).

The format holds the trees and the learner's parameters and nothing executable: loading
it is parsing (XGBoost 3 reads no other format; a pickle is refused as "not a model").
An ``XGBClassifier`` or ``XGBRegressor`` is saved as its booster, which is what predicts.

What the booster says of itself: its objective (``binary:*`` and ``multi:*`` are
classifiers, the rest regressors), its number of features and classes, and feature
names when it was trained with them. Its classes are positions (XGBoost's scikit-learn
wrapper trains on labels ``0 .. k-1``), so a version's signature names them. Per-row
contributions are XGBoost's own exact TreeSHAP (``pred_contribs``), in the margin.
"""

from __future__ import annotations

import json
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

# Classification objectives whose margin becomes probabilities by a sigmoid (one score) or
# a softmax (one score per class); binary:hinge gives labels only.
_SIGMOID = frozenset({"binary:logistic", "binary:logitraw"})
_SOFTMAX = frozenset({"multi:softprob", "multi:softmax"})
_LABELS_ONLY = frozenset({"binary:hinge"})


def _booster(data: bytes) -> Any:
    import xgboost  # imported on use: the registry and CLI import this package without it

    booster = xgboost.Booster()
    booster.load_model(bytearray(data))
    return booster


def _learner(booster: Any) -> tuple[str, int, int]:
    """The booster's objective, its number of classes (0: not a classifier) and of targets."""
    learner = json.loads(booster.save_config())["learner"]
    objective = str(learner["objective"]["name"])
    model = learner["learner_model_param"]
    classes = 2 if objective in _SIGMOID | _LABELS_ONLY else int(model.get("num_class", "0"))
    return (
        objective,
        classes if objective.startswith(("binary:", "multi:")) else 0,
        int(model.get("num_target", "1")),
    )


class XGBoostRuntime(Runtime):
    flavor = "xgboost"

    def __init__(self, booster: Any):
        self.booster = booster
        self.objective, classes, targets = _learner(booster)
        if targets != 1:
            raise ArtifactError(f"the booster predicts {targets} targets; serving takes one answer per row")
        self.family = f"Booster({self.objective})"
        self.n_features_in_ = int(booster.num_features())
        if classes:
            self.task = model_pb2.TASK_CLASSIFICATION
            self.classes_ = np.array([str(i) for i in range(classes)], dtype=object)
            self.positional_classes = True
        else:
            self.task = model_pb2.TASK_REGRESSION

    @property
    def has_proba(self) -> bool:
        return self.objective in _SIGMOID | _SOFTMAX

    def _margin(self, matrix: Matrix) -> Matrix:
        return np.asarray(self.booster.inplace_predict(matrix, predict_type="margin"), dtype=np.float64)

    def predict_proba(self, matrix: Matrix) -> Matrix:
        if self.objective in ("binary:logistic", "multi:softprob"):
            # XGBoost's own transformation, as XGBClassifier.predict_proba gives it.
            value = np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64)
            return np.column_stack([1.0 - value, value]) if value.ndim == 1 else value
        margin = self._margin(matrix)
        if margin.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-margin))
            return np.column_stack([1.0 - positive, positive])
        shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
        probabilities: Matrix = shifted / shifted.sum(axis=1, keepdims=True)
        return probabilities

    def predict(self, matrix: Matrix) -> Matrix:
        if self.classes_ is None:
            return np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64).reshape(-1)
        if self.has_proba:
            return np.asarray(self.classes_[np.argmax(self.predict_proba(matrix), axis=1)])
        return np.asarray(self.classes_[(self._margin(matrix) > 0).astype(np.intp)])

    def explainer(self) -> Explainer:
        return _BoosterContributions(self.booster)


class _BoosterContributions:
    """XGBoost's exact TreeSHAP values: ``pred_contribs`` puts the bias in the last column."""

    def __init__(self, booster: Any):
        self._booster = booster

    def explain(self, matrix: Matrix) -> Contributions:
        import xgboost

        # The matrix's columns are the booster's features in order: name them as it does, or a
        # booster trained with feature names refuses the unnamed matrix.
        data = xgboost.DMatrix(matrix, missing=np.nan, feature_names=self._booster.feature_names)
        raw = np.asarray(self._booster.predict(data, pred_contribs=True), dtype=np.float64)
        per_output = raw[:, None, :] if raw.ndim == 2 else raw  # [rows, outputs, features + 1]
        return bias_last(per_output)


class XGBoostFlavor(Flavor):
    name = "xgboost"
    platform = "xgboost"
    packages = ("xgboost-cpu", "numpy")
    modules = ("xgboost.",)
    saved_as = "XGBoost's own model format (Booster.save_raw('ubj'), or save_model to .ubj or .json)"

    def handles(self, model: object) -> bool:
        return isinstance(model, XGBoostRuntime) or super().handles(model)

    def save(self, model: Any, *, signing_key: bytes | None = None) -> SavedArtifact:
        if isinstance(model, XGBoostRuntime):
            booster = model.booster
        else:
            booster = model.get_booster() if hasattr(model, "get_booster") else model
        return SavedArtifact(bytes(booster.save_raw(raw_format="ubj")))

    def check(self, data: bytes, *, signature_hmac: str, signing_key: bytes | None) -> None:
        XGBoostRuntime(_booster(data))

    def open(self, artifact: StoredArtifact, *, signing_key: bytes | None) -> Runtime:
        return XGBoostRuntime(_booster(artifact.data))

    def describe(self, data: bytes) -> InferredSignature:
        booster = _booster(data)
        return described(XGBoostRuntime(booster), booster.feature_names or (), "the booster")
