"""Per-row feature contributions: how much each feature moved one row's answer.

For a row ``x`` an explainer returns one number per feature (in the signature's
``feature_names`` order) and a base value, such that the base value plus the row's
contributions is exactly the model's *margin* for that row. Which margin, and how the
contributions are computed, depends on the model:

- linear models (``LogisticRegression``, ``Ridge``, ``LinearRegression`` ...): the margin
  is the linear predictor ``f(x) = b + sum_j w_j z_j(x)``, where ``z(x)`` is the row after
  the pipeline's preprocessing: the log-odds for a classifier, the value for a regressor.
  Feature ``i`` contributes ``sum of w_j z_j(x)`` over the columns ``j`` it produced (one
  for a scaled number, one per category for a one-hot encoded one); the base value is
  ``b``. The training mean of each column is *not* subtracted: the pipeline keeps it for
  numbers only (the scaler's ``mean_``, after which the column is centred already, so the
  two definitions agree there), never for one-hot columns (the encoder keeps no category
  frequencies). Subtracting it for some columns and not others would make contributions
  incomparable across features; this way a category's contribution is its weight, and a
  standardised number's is its weight times its distance from the training mean in
  standard deviations.
- random forests and single decision trees: the margin is the predicted probability
  (classifiers) or value (regressors). Saabas' decision-path attribution: every split a
  row passes moves the node value from parent to child, and the move is credited to the
  split's feature; averaged over the trees. The base value is the mean root value (the
  training distribution). Exact, and one sparse product per request.
- gradient-boosted trees (scikit-learn's histogram gradient boosting, XGBoost, LightGBM):
  the margin is the raw score (log-odds for a two-class classifier, one score per class
  before the softmax for more, the value for a regressor). Exact TreeSHAP values
  (Lundberg et al., path-dependent: feature interactions are shared out by the Shapley
  rule, weighted by how many training rows each branch saw); the base value is the
  expected raw score over the training rows. XGBoost and LightGBM compute them
  themselves (``pred_contribs``, ``pred_contrib``); histogram gradient boosting through
  shap's ``TreeExplainer``, which reads its trees (missing values follow each split's
  learned direction, as in prediction).

Classifiers with two classes are explained toward the second class in ``classes`` (the
one the log-odds or probability are of); with more classes, toward each row's predicted
class. Columns the preprocessing produced are mapped back to the feature they came
from through ``get_feature_names_out``, so any per-feature preprocessing (imputation,
scaling, one-hot or ordinal encoding, missing indicators) is supported and anything that
mixes features (PCA, polynomial features) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Unexplainable(Exception):
    """The model cannot explain its answers; the message says why."""


@dataclass(frozen=True)
class Contributions:
    values: np.ndarray[Any, Any]
    """``[rows, n_features]``."""
    base: np.ndarray[Any, Any]
    """``[rows]``."""


class Explainer(Protocol):
    def explain(self, matrix: np.ndarray[Any, Any]) -> Contributions:
        """Contributions for the rows of ``matrix`` (a feature matrix, as predict takes it)."""
        ...


def toward_predicted(values: np.ndarray[Any, Any], base: np.ndarray[Any, Any]) -> Contributions:
    """Each row explained toward one output: the only one, or the one with the largest margin.

    ``values`` is ``[rows, outputs, features]`` and ``base`` ``[outputs]`` or ``[rows,
    outputs]``, one output per class score (a two-class model with one score has one).

    >>> values = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    >>> explained = toward_predicted(values, np.array([0.5, 0.0]))
    >>> explained.values.tolist(), explained.base.tolist()
    ([[0.0, 2.0]], [0.0])
    """
    rows = np.arange(values.shape[0])
    base = np.broadcast_to(base, (values.shape[0], values.shape[1]))
    if values.shape[1] == 1:
        chosen = np.zeros(len(rows), dtype=np.intp)
    else:
        chosen = np.argmax(values.sum(axis=2) + base, axis=1)
    return Contributions(np.ascontiguousarray(values[rows, chosen]), np.ascontiguousarray(base[rows, chosen]))


def bias_last(per_output: np.ndarray[Any, Any]) -> Contributions:
    """Boosters' own layout, ``[rows, outputs, features + 1]`` with the bias (the base) last,
    each row explained toward its predicted output (:func:`toward_predicted`)."""
    return toward_predicted(per_output[:, :, :-1], per_output[:, :, -1])
