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
        return holdout_scores(model, X, y, self.task, only=self.name)[self.name]

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
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, classes: np.ndarray, only: str | None = None
) -> dict[str, float]:
    """Every classification metric (or ``only`` that one). ``f1`` is macro-averaged: no class
    is "the positive one". Labels are encoded as integers first, which spares scikit-learn
    its slow checks of text labels (the gates score hundreds of times per job)."""
    known = [str(c) for c in classes]
    unseen = sorted(set(map(str, y_true)) - set(known))
    index = {label: i for i, label in enumerate(known + unseen)}
    truth = np.fromiter((index[str(v)] for v in y_true), dtype=np.int64, count=len(y_true))
    predicted = np.fromiter((index[str(v)] for v in y_pred), dtype=np.int64, count=len(y_pred))
    wanted = {only} if only else {"accuracy", "f1", "balanced_accuracy", "log_loss", "roc_auc"}
    scores: dict[str, float] = {}
    if "accuracy" in wanted:
        scores["accuracy"] = float(np.mean(truth == predicted)) if len(truth) else math.nan
    if "f1" in wanted:
        scores["f1"] = float(f1_score(truth, predicted, average="macro", zero_division=0))
    if "balanced_accuracy" in wanted:
        with warnings.catch_warnings():
            # A holdout that lacks one of the predicted classes is legitimate; the
            # warning about it says nothing the score does not.
            warnings.simplefilter("ignore", UserWarning)
            scores["balanced_accuracy"] = float(balanced_accuracy_score(truth, predicted))
    if "log_loss" in wanted:
        # Classes the model never saw get probability 0: the loss says so, loudly.
        padded = np.hstack([proba, np.zeros((len(proba), len(unseen)))]) if unseen else proba
        scores["log_loss"] = float(
            log_loss(truth, np.clip(padded, 1e-15, 1.0), labels=list(range(len(index))))
        )
    if "roc_auc" in wanted:
        scores["roc_auc"] = _roc_auc(truth, proba, len(known))
    return scores


def _roc_auc(truth: np.ndarray, proba: np.ndarray, known: int) -> float:
    present = set(truth.tolist())
    if len(present) < 2 or max(present) >= known:
        return math.nan
    if known == 2:
        return float(roc_auc_score(truth == 1, proba[:, 1]))
    if len(present) != known:
        return math.nan
    return float(roc_auc_score(truth, proba, multi_class="ovr", labels=list(range(known))))


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    r2 = float(r2_score(y_true, y_pred)) if len(y_true) > 1 else math.nan
    return {
        "r2": r2,
        "neg_rmse": -float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }


def holdout_scores(
    model: Any, X: np.ndarray, y: np.ndarray, task: Task.ValueType, only: str | None = None
) -> dict[str, float]:
    """Every metric of ``task`` (or ``only`` that one) for ``model`` on ``(X, y)``."""
    if task == Task.TASK_CLASSIFICATION:
        proba = model.predict_proba(X)
        classes = np.asarray(model.classes_)
        predicted = classes[np.argmax(proba, axis=1)]
        return classification_scores(y, predicted, proba, classes, only)
    scores = regression_scores(y, model.predict(X))
    return {only: scores[only]} if only else scores
