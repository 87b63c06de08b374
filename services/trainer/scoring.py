"""The metrics a spec can optimise, and how every holdout score is computed.

Each metric knows its direction, so gates compare with :meth:`Metric.gain` and never
care whether bigger is better. Class labels are canonical texts; probability columns
follow the model's ``classes_``. A metric that is undefined on the given rows (ROC AUC
on a single class) is ``nan``, never an exception.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from services.common.proto.mlops.v1.model_pb2 import Task


@dataclass(frozen=True)
class Metric:
    name: str
    task: Task.ValueType
    greater_is_better: bool

    def gain(self, value: float, reference: float) -> float:
        """How much better ``value`` is than ``reference`` (negative when worse)."""
        return value - reference if self.greater_is_better else reference - value

    def score(self, model: Any, X: np.ndarray, y: np.ndarray) -> float:
        return holdout_scores(model, X, y, self.task)[self.name]

    def rank_key(self, value: float) -> float:
        """Sort key, smallest first for the best; ``nan`` sorts last."""
        if math.isnan(value):
            return math.inf
        return -value if self.greater_is_better else value


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", Task.TASK_CLASSIFICATION, True),
        Metric("balanced_accuracy", Task.TASK_CLASSIFICATION, True),
        Metric("f1", Task.TASK_CLASSIFICATION, True),
        Metric("roc_auc", Task.TASK_CLASSIFICATION, True),
        Metric("log_loss", Task.TASK_CLASSIFICATION, False),
        Metric("r2", Task.TASK_REGRESSION, True),
        Metric("neg_rmse", Task.TASK_REGRESSION, True),
        Metric("mae", Task.TASK_REGRESSION, False),
    )
}
DEFAULT_METRIC = {Task.TASK_CLASSIFICATION: "accuracy", Task.TASK_REGRESSION: "r2"}


def classification_scores(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, classes: np.ndarray
) -> dict[str, float]:
    """Every classification metric. ``f1`` is macro-averaged: no class is "the positive one"."""
    scores = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    with warnings.catch_warnings():
        # A holdout that lacks one of the predicted classes is legitimate; the
        # warning about it says nothing the score does not.
        warnings.simplefilter("ignore", UserWarning)
        scores["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    known = [str(c) for c in classes]
    unseen = sorted(set(map(str, y_true)) - set(known))
    # Classes the model never saw get probability 0: the loss says so, loudly.
    padded = np.hstack([proba, np.zeros((len(proba), len(unseen)))]) if unseen else proba
    scores["log_loss"] = float(log_loss(y_true, np.clip(padded, 1e-15, 1.0), labels=known + unseen))
    scores["roc_auc"] = _roc_auc(y_true, proba, known)
    return scores


def _roc_auc(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> float:
    present = set(map(str, y_true))
    if len(present) < 2 or not present <= set(classes):
        return math.nan
    if len(classes) == 2:
        return float(roc_auc_score(y_true == classes[1], proba[:, 1]))
    if present != set(classes):
        return math.nan
    return float(roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    r2 = float(r2_score(y_true, y_pred)) if len(y_true) > 1 else math.nan
    return {
        "r2": r2,
        "neg_rmse": -float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


def holdout_scores(model: Any, X: np.ndarray, y: np.ndarray, task: Task.ValueType) -> dict[str, float]:
    """Every metric of ``task`` for ``model`` on ``(X, y)``."""
    if task == Task.TASK_CLASSIFICATION:
        proba = model.predict_proba(X)
        classes = np.asarray(model.classes_)
        predicted = classes[np.argmax(proba, axis=1)]
        return classification_scores(y, predicted, proba, classes)
    return regression_scores(y, model.predict(X))
