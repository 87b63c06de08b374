"""``skops``: scikit-learn estimators and pipelines, saved with skops.

skops files describe every object they would build, so the types are checked before
anything is built: skops' own safe defaults plus :data:`TRUSTED_TYPE_PREFIXES`, module
prefixes rather than single names so a new estimator family needs no code change.
Anything outside them (``os``, ``subprocess``, ``builtins.eval``, a pickled function) is
refused, at upload and at every load.
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
from services.common.flavors.explain import Explainer
from services.common.proto.mlops.v1 import model_pb2
from services.common.values import label_text

TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")


def _estimator(data: bytes) -> Any:
    """The estimator in ``data``, built only after every type it holds is checked."""
    import skops.io as sio  # imported on use: it pulls in scikit-learn (seconds); digests need neither

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"not a skops artifact: {type(exc).__name__}: {exc}") from None
    refused = [name for name in untrusted if not name.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise ArtifactError(
            f"the skops artifact contains types outside the trusted list: {', '.join(sorted(refused))}"
        )
    model = sio.loads(data, trusted=untrusted)
    if not callable(getattr(model, "predict", None)):
        raise ArtifactError(f"the skops artifact holds a {type(model).__name__}, which has no predict()")
    return model


def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator


class SklearnRuntime(Runtime):
    """A fitted scikit-learn estimator or pipeline."""

    flavor = "skops"
    accepts_text = True  # pipelines encode their own categories

    def __init__(self, estimator: Any):
        self.estimator = estimator
        self.family = type(_final_step(estimator)).__name__
        self.n_features_in_ = getattr(estimator, "n_features_in_", None)
        fitted = getattr(estimator, "classes_", None)
        if fitted is not None:
            self.task = model_pb2.TASK_CLASSIFICATION
            self.classes_ = np.array(
                [label_text(c.item() if hasattr(c, "item") else c) for c in fitted], dtype=object
            )
        else:
            self.task = model_pb2.TASK_REGRESSION

    @property
    def has_proba(self) -> bool:
        return self.classes_ is not None and hasattr(self.estimator, "predict_proba")

    def predict(self, matrix: Matrix) -> Matrix:
        return np.asarray(self.estimator.predict(matrix))

    def predict_proba(self, matrix: Matrix) -> Matrix:
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)

    def explainer(self) -> Explainer:
        from services.common.flavors.sklearn_explain import explainer_for  # imports scikit-learn

        return explainer_for(self.estimator, self.n_features_in_ or 0)


class SkopsFlavor(Flavor):
    name = "skops"
    platform = "scikit-learn"
    packages = ("scikit-learn", "skops", "numpy", "scipy")
    modules = ("sklearn.",)
    saved_as = "a skops file (skops.io.dump) of a fitted scikit-learn estimator or pipeline"

    def save(self, model: Any, *, signing_key: bytes | None = None) -> SavedArtifact:
        import skops.io as sio  # imported on use, as above

        return SavedArtifact(bytes(sio.dumps(model)))

    def check(self, data: bytes, *, signature_hmac: str, signing_key: bytes | None) -> None:
        _estimator(data)

    def open(self, artifact: StoredArtifact, *, signing_key: bytes | None) -> Runtime:
        return SklearnRuntime(_estimator(artifact.data))

    def describe(self, data: bytes) -> InferredSignature:
        estimator = _estimator(data)
        names = getattr(estimator, "feature_names_in_", None)
        return described(
            SklearnRuntime(estimator), [] if names is None else [str(n) for n in names], "the estimator"
        )
