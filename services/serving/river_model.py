"""River models, the trainer's online flavor, behind the surface :class:`Predictor` uses.

A river pipeline predicts one row at a time from a dict keyed by feature name
(:func:`services.common.values.river_row`), so :class:`RiverModel` turns each row of
the feature matrix into that dict and gathers the answers into arrays: probabilities
over the signature's classes (renormalised, as the trainer evaluated them), or values.

River has no code-free format: its artifacts are pickles signed by the trainer
(``river-hmac``). :func:`load_river` unpickles only bytes whose SHA-256 digest and
HMAC both verify under this replica's ``MLOPS_ARTIFACT_SIGNING_KEY``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from services.common.artifacts import SIGNATURE_HMAC_PARAM, ArtifactError, load_signed_pickle
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.common.values import river_row

PLATFORM = "river"
FEATURE_KINDS_PARAM = "feature_kinds"
"""Version parameter (the trainer writes it): JSON ``{feature: "numeric" | "categorical"}``."""


class RiverModel:
    """A river pipeline answering for a feature matrix, row by row.

    Parameters
    ----------
    model
        The river pipeline (``predict_proba_one`` for classifiers, ``predict_one`` for
        regressors).
    feature_names
        Column order of the matrices it is given.
    categorical
        The features that are categories (text); the others are numbers.
    classes
        A classifier's classes, in the order of the probability columns.
    """

    def __init__(
        self, model: Any, feature_names: Sequence[str], categorical: Collection[str], classes: Sequence[str]
    ):
        self.model = model
        self.feature_names = tuple(feature_names)
        self.categorical = frozenset(categorical)
        self.n_features_in_ = len(self.feature_names)
        if classes:
            self.classes_ = np.array(list(classes), dtype=object)

    def _rows(self, matrix: np.ndarray[Any, Any]) -> Any:
        for cells in matrix:
            yield river_row(self.feature_names, self.categorical, cells.tolist())

    def predict_proba(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        classes = self.classes_.tolist()
        out = np.empty((len(matrix), len(classes)))
        for i, row in enumerate(self._rows(matrix)):
            answer = self.model.predict_proba_one(row)
            scores = [float(answer.get(c, 0.0)) for c in classes]
            total = sum(scores)
            # A model that has not met a class yet may give no probability at all.
            out[i] = [s / total for s in scores] if total > 0 else [1 / len(classes)] * len(classes)
        return out

    def predict(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if hasattr(self, "classes_"):
            return np.asarray(self.classes_[np.argmax(self.predict_proba(matrix), axis=1)])
        return np.array([float(self.model.predict_one(row) or 0.0) for row in self._rows(matrix)])


def load_river(version: registry_pb2.ModelVersion, data: bytes, key: bytes | None) -> RiverModel:
    """The version's river model, or :class:`ArtifactError` before a byte is unpickled."""
    if key is None:
        raise ArtifactError(
            "river-hmac artifacts are signed pickles, and this replica has no MLOPS_ARTIFACT_SIGNING_KEY "
            "to verify them with (set the key the trainer signs with)"
        )
    signature = version.params.get(SIGNATURE_HMAC_PARAM, "")
    if not signature:
        raise ArtifactError(
            f"the version has no '{SIGNATURE_HMAC_PARAM}' parameter to verify its artifact with"
        )
    model = load_signed_pickle(data, version.artifact.sha256, signature, key)
    task = version.signature.task
    needed = "predict_proba_one" if task == model_pb2.TASK_CLASSIFICATION else "predict_one"
    if not callable(getattr(model, needed, None)):
        raise ArtifactError(f"the artifact is a {type(model).__name__}, which has no {needed}()")
    try:
        kinds = json.loads(version.params.get(FEATURE_KINDS_PARAM, "{}"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"parameter '{FEATURE_KINDS_PARAM}' is not JSON: {exc}") from None
    if not isinstance(kinds, dict):
        raise ArtifactError(f"parameter '{FEATURE_KINDS_PARAM}' must be a JSON object")
    categorical = {name for name, kind in kinds.items() if kind == "categorical"}
    classes = list(version.signature.classes) if task == model_pb2.TASK_CLASSIFICATION else []
    return RiverModel(model, version.signature.feature_names, categorical, classes)
