"""The booster families: XGBoost and LightGBM, stored with their own flavors.

A booster family fits the library's scikit-learn wrapper (``XGBClassifier``,
``LGBMRegressor`` ...) on the feature matrix as it is, and then answers through the
flavor's runtime built from the fitted booster: the object serving builds from the
artifact. So what the search, the gates and the importances score is what serving runs,
as with :class:`~services.trainer.river_models.RiverEstimator` for the river families.

The artifact is the booster alone, with nothing in front of it: numbers in, in the
signature's order, missing values left to the booster (both handle them natively). So a
booster family takes numeric features only; a spec giving it a categorical feature is
refused when it is planned (use ``hist_gradient_boosting``, which encodes categories in
its pipeline). Boosters train on class positions ``0 .. k-1``: the estimator sorts the
labels it is given, trains on their positions, and names the probability columns with
them, which the version's signature records (``Signature.classes``) for serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np

from services.common.flavors.base import Matrix
from services.common.flavors.lightgbm import LightGBMRuntime, booster_header
from services.common.flavors.xgboost import XGBoostRuntime
from services.common.proto.mlops.v1.model_pb2 import Task
from services.trainer.tabular import Feature

_CHECK_ROWS = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]] * 2)
_CHECK_LABELS = np.array(["a", "b"] * 4, dtype=object)


class BoosterEstimator:
    """What both booster families share: parameters, label positions, fitting.

    Subclasses name the parameters a spec may set (:attr:`parameters`; seeds, threads and
    the objective are the trainer's), build the library's wrapper (:meth:`_wrapper`) and
    become their flavor's runtime from the fitted booster (:meth:`_become`).
    """

    parameters: ClassVar[frozenset[str]]
    defaults: ClassVar[Mapping[str, Any]] = {}
    task: Task.ValueType
    classes_: Matrix | None
    positional_classes: bool

    def __init__(
        self, task: Task.ValueType, params: Mapping[str, Any], seed: int = 0, features: Sequence[Feature] = ()
    ):
        self.task = task
        self.params = dict(params)
        self.seed = seed
        self.features = tuple(features)
        self.classes_ = None
        self.fitted = False

    def with_features(self, features: Sequence[Feature]) -> Self:
        return type(self)(self.task, self.params, self.seed, features)

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {name: self.params.get(name) for name in self.parameters}

    def _validate_params(self) -> None:
        """The libraries check their parameters when they train: train on eight rows, one tree."""
        probe = type(self)(Task.TASK_CLASSIFICATION, {**self.params, "n_estimators": 1}, self.seed)
        try:
            probe.fit(_CHECK_ROWS, _CHECK_LABELS)
        except Exception as exc:  # each library raises its own error type on a bad value
            raise ValueError(
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
            ) from None

    def fit(self, X: Matrix, y: Matrix) -> Self:
        matrix = np.asarray(X, dtype=np.float64)
        names = [f.name for f in self.features] if len(self.features) == matrix.shape[1] else []
        if self.task == Task.TASK_CLASSIFICATION:
            labels = np.array(sorted({str(label) for label in y}), dtype=object)
            target = np.searchsorted(labels, np.array([str(label) for label in y], dtype=object))
        else:
            target = np.asarray(y, dtype=np.float64)
        wrapper = self._wrapper({**self.defaults, **self.params})
        self._fit(wrapper, matrix, target, names)
        self._become(wrapper)
        if self.task == Task.TASK_CLASSIFICATION:
            # The runtime counted the positions; the labels name them (as the signature will).
            self.classes_ = labels
            self.positional_classes = False
        self.fitted = True
        return self

    def _wrapper(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _fit(self, wrapper: Any, X: Matrix, y: Matrix, names: list[str]) -> None:
        wrapper.fit(X, y)

    def _become(self, wrapper: Any) -> None:
        raise NotImplementedError


class XGBoostEstimator(BoosterEstimator, XGBoostRuntime):
    """The ``xgboost`` family: an ``XGBClassifier``/``XGBRegressor``, stored as its booster."""

    parameters = frozenset(
        {
            "n_estimators",
            "max_depth",
            "max_leaves",
            "learning_rate",
            "min_child_weight",
            "gamma",
            "subsample",
            "colsample_bytree",
            "colsample_bylevel",
            "colsample_bynode",
            "reg_alpha",
            "reg_lambda",
            "max_delta_step",
            "max_bin",
            "grow_policy",
            "scale_pos_weight",
        }
    )
    defaults = {"n_estimators": 100, "tree_method": "hist"}

    def __init__(
        self, task: Task.ValueType, params: Mapping[str, Any], seed: int = 0, features: Sequence[Feature] = ()
    ):
        BoosterEstimator.__init__(self, task, params, seed, features)

    def _wrapper(self, params: dict[str, Any]) -> Any:
        import xgboost

        cls = xgboost.XGBClassifier if self.task == Task.TASK_CLASSIFICATION else xgboost.XGBRegressor
        return cls(**params, random_state=self.seed, n_jobs=1, verbosity=0)

    def _fit(self, wrapper: Any, X: Matrix, y: Matrix, names: list[str]) -> None:
        wrapper.fit(X, y)
        if names:
            # Stored in the artifact: the booster says which column is which.
            wrapper.get_booster().feature_names = names

    def _become(self, wrapper: Any) -> None:
        XGBoostRuntime.__init__(self, wrapper.get_booster())


class LightGBMEstimator(BoosterEstimator, LightGBMRuntime):
    """The ``lightgbm`` family: an ``LGBMClassifier``/``LGBMRegressor``, stored as its booster."""

    parameters = frozenset(
        {
            "n_estimators",
            "num_leaves",
            "max_depth",
            "learning_rate",
            "min_child_samples",
            "min_child_weight",
            "min_split_gain",
            "subsample",
            "subsample_freq",
            "colsample_bytree",
            "reg_alpha",
            "reg_lambda",
            "boosting_type",
        }
    )
    defaults = {"n_estimators": 100}

    def __init__(
        self, task: Task.ValueType, params: Mapping[str, Any], seed: int = 0, features: Sequence[Feature] = ()
    ):
        BoosterEstimator.__init__(self, task, params, seed, features)

    def _wrapper(self, params: dict[str, Any]) -> Any:
        import lightgbm

        cls = lightgbm.LGBMClassifier if self.task == Task.TASK_CLASSIFICATION else lightgbm.LGBMRegressor
        return cls(**params, random_state=self.seed, n_jobs=1, verbose=-1)

    def _fit(self, wrapper: Any, X: Matrix, y: Matrix, names: list[str]) -> None:
        wrapper.fit(X, y, feature_name=names or "auto")

    def _become(self, wrapper: Any) -> None:
        LightGBMRuntime.__init__(self, wrapper.booster_, booster_header(wrapper.booster_))
