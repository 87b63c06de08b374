"""``river-hmac``: river models (the trainer's online flavor), as signed pickles.

River has no code-free format, so its artifacts are pickles signed by the trainer with
the platform's key (HMAC-SHA256). The registry refuses one whose HMAC does not verify,
and every loader checks it again, with the digest, before a single byte is unpickled.
The HMAC travels in the version's parameters (:data:`SIGNATURE_HMAC_PARAM`), the kinds of
its features in :data:`FEATURE_KINDS_PARAM` (``{feature: "numeric" | "categorical"}``).

A river pipeline predicts one row at a time from a dict keyed by feature name;
:class:`RiverRuntime` is the one adapter that turns the rows of a feature matrix into
those dicts (:func:`river_row`) and gathers the answers into arrays. The trainer's
learner is a :class:`RiverRuntime` too, so a model sees in serving exactly the rows it
learned from.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from services.common.artifacts import ArtifactError, sign, verify_signature
from services.common.flavors.base import (
    SIGNATURE_HMAC_PARAM,
    Flavor,
    InferredSignature,
    Matrix,
    Runtime,
    SavedArtifact,
    StoredArtifact,
)
from services.common.proto.mlops.v1 import model_pb2
from services.common.values import MISSING_CATEGORY, label_text

FEATURE_KINDS_PARAM = "feature_kinds"
"""Version parameter (the trainer writes it): JSON ``{feature: "numeric" | "categorical"}``."""
CATEGORICAL = "categorical"


def river_row(names: Sequence[str], categorical: Collection[str], cells: Iterable[Any]) -> dict[str, Any]:
    """One feature-matrix row as the dict a river pipeline learns and predicts from.

    Numbers as floats (``None`` when missing: river's imputers fill it); categories as
    their canonical text (``MISSING_CATEGORY`` when missing).

    >>> river_row(["f0", "colour"], {"colour"}, [1, float("nan")])
    {'f0': 1.0, 'colour': '__missing__'}
    """
    row: dict[str, Any] = {}
    for name, value in zip(names, cells, strict=True):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if name in categorical:
            row[name] = MISSING_CATEGORY if missing else label_text(value)
        elif missing:
            row[name] = None
        elif isinstance(value, str):
            raise ValueError(f"feature '{name}' is numeric; got text {value[:64]!r}")
        else:
            row[name] = float(value)
    return row


class RiverRuntime(Runtime):
    """A river pipeline answering for a feature matrix, row by row.

    Parameters
    ----------
    model
        The river pipeline (``predict_proba_one`` for classifiers, ``predict_one`` for
        regressors); None until a learner has fitted one.
    feature_names
        Column order of the matrices it is given.
    categorical
        The features that are categories (text); the others are numbers.
    task
        Classification or regression.
    classes
        A classifier's classes, in the order of the probability columns.
    """

    flavor = "river-hmac"
    accepts_text = True

    def __init__(
        self,
        model: Any,
        feature_names: Sequence[str],
        categorical: Collection[str],
        task: model_pb2.Task.ValueType,
        classes: Sequence[str] = (),
    ):
        self.model = model
        self.feature_names = tuple(feature_names)
        self.categorical = frozenset(categorical)
        self.task = task
        self.family = type(model).__name__
        self.n_features_in_ = len(self.feature_names)
        self.classes_ = (
            np.array(list(classes), dtype=object) if task == model_pb2.TASK_CLASSIFICATION else None
        )

    @property
    def has_proba(self) -> bool:
        return self.task == model_pb2.TASK_CLASSIFICATION

    def rows(self, matrix: Matrix) -> Iterator[dict[str, Any]]:
        for cells in matrix:
            yield river_row(self.feature_names, self.categorical, cells.tolist())

    def predict_proba(self, matrix: Matrix) -> Matrix:
        assert self.classes_ is not None, "a classifier has classes"
        classes = self.classes_.tolist()
        out = np.empty((len(matrix), len(classes)))
        for i, row in enumerate(self.rows(matrix)):
            answer = self.model.predict_proba_one(row)
            scores = [float(answer.get(c, 0.0)) for c in classes]
            total = sum(scores)
            # A model that has not met a class yet may give no probability at all.
            out[i] = [s / total for s in scores] if total > 0 else [1 / len(classes)] * len(classes)
        return out

    def predict(self, matrix: Matrix) -> Matrix:
        if self.classes_ is not None:
            return np.asarray(self.classes_[np.argmax(self.predict_proba(matrix), axis=1)])
        return np.array([float(self.model.predict_one(row) or 0.0) for row in self.rows(matrix)])


def categorical_features(params: dict[str, str] | Any) -> set[str]:
    """The categorical features named by a version's :data:`FEATURE_KINDS_PARAM`."""
    try:
        kinds = json.loads(params.get(FEATURE_KINDS_PARAM, "{}"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"parameter '{FEATURE_KINDS_PARAM}' is not JSON: {exc}") from None
    if not isinstance(kinds, dict):
        raise ArtifactError(f"parameter '{FEATURE_KINDS_PARAM}' must be a JSON object")
    return {name for name, kind in kinds.items() if kind == CATEGORICAL}


class RiverFlavor(Flavor):
    name = "river-hmac"
    platform = "river"
    packages = ("river",)
    signed = True
    saved_as = "a river model pickled and signed by the platform's trainer"

    def handles(self, model: object) -> bool:
        return isinstance(model, RiverRuntime) or type(model).__module__.startswith("river.")

    def save(self, model: Any, *, signing_key: bytes | None = None) -> SavedArtifact:
        if signing_key is None:
            raise ArtifactError(
                "river models are stored as signed pickles: set MLOPS_ARTIFACT_SIGNING_KEY (the same key on "
                "the trainer, the registry and serving)"
            )
        pipeline = model.model if isinstance(model, RiverRuntime) else model
        data = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
        return SavedArtifact(data, sign(data, signing_key))

    def check(self, data: bytes, *, signature_hmac: str, signing_key: bytes | None) -> None:
        verify_signature(data, signature_hmac, signing_key)

    def open(self, artifact: StoredArtifact, *, signing_key: bytes | None) -> Runtime:
        if not artifact.signature_hmac:
            raise ArtifactError(
                f"the version has no '{SIGNATURE_HMAC_PARAM}' parameter to verify its artifact with"
            )
        verify_signature(artifact.data, artifact.signature_hmac, signing_key)
        model = pickle.load(io.BytesIO(artifact.data))
        task = artifact.signature.task
        needed = "predict_proba_one" if task == model_pb2.TASK_CLASSIFICATION else "predict_one"
        if not callable(getattr(model, needed, None)):
            raise ArtifactError(f"the artifact is a {type(model).__name__}, which has no {needed}()")
        return RiverRuntime(
            model,
            artifact.signature.feature_names,
            categorical_features(artifact.params),
            task,
            list(artifact.signature.classes),
        )

    def describe(self, data: bytes) -> InferredSignature:
        return InferredSignature(
            unknown=(
                "everything: a river pipeline keeps no signature; the trainer that signs it declares one",
            )
        )
