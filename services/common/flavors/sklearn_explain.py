"""scikit-learn models' per-row contributions (see :mod:`services.common.flavors.explain`
for what the numbers are): linear models, forests and single trees, and histogram
gradient boosting through shap's ``TreeExplainer``.
"""

from __future__ import annotations

import re
import secrets
import threading
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from services.common.flavors.explain import Contributions, Explainer, Unexplainable, toward_predicted

LINEAR_MODELS = (
    LogisticRegression,
    RidgeClassifier,
    SGDClassifier,
    LinearRegression,
    Ridge,
    Lasso,
    ElasticNet,
    SGDRegressor,
)
TREE_MODELS = (
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    DecisionTreeClassifier,
    DecisionTreeRegressor,
)
BOOSTED_MODELS = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)


def explainer_for(estimator: Any, n_features: int) -> Explainer:
    """The explainer of a fitted estimator or pipeline, or :class:`Unexplainable`.

    Cheap: structural checks only; anything costly is built on the first explanation.
    """
    if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
        prepare: Any = estimator[:-1]
        model = estimator[-1]
    else:
        prepare = None
        model = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if not isinstance(model, LINEAR_MODELS + TREE_MODELS + BOOSTED_MODELS):
        raise Unexplainable(f"{type(model).__name__} has no exact per-row attribution here")
    sources = np.arange(n_features) if prepare is None else source_features(prepare, n_features)
    width = getattr(model, "n_features_in_", len(sources))
    if width != len(sources):
        raise Unexplainable(f"the preprocessing names {len(sources)} columns, the model takes {width}")
    aggregate = np.zeros((len(sources), n_features))
    aggregate[np.arange(len(sources)), sources] = 1.0
    if isinstance(model, LINEAR_MODELS):
        return LinearExplainer(prepare, model, aggregate)
    if isinstance(model, BOOSTED_MODELS):
        return BoostedTreeExplainer(prepare, model, aggregate)
    return TreeExplainer(prepare, model, aggregate)


def source_features(prepare: Any, n_features: int) -> np.ndarray[Any, Any]:
    """For each column ``prepare`` outputs, the index of the input feature it comes from.

    The inputs are named by unguessable tokens; every output column name must carry
    exactly one of them (``numeric__<t3>``, ``categorical__<t2>_red``), which is how
    scikit-learn names the outputs of per-feature transformers.
    """
    nonce = secrets.token_hex(8)
    tokens = [f"<{nonce}:{i}>" for i in range(n_features)]
    try:
        names = prepare.get_feature_names_out(tokens)
    except Exception as exc:  # transformers without output names raise several kinds
        raise Unexplainable(f"its preprocessing does not name its output columns ({exc})") from None
    pattern = re.compile(rf"<{nonce}:(\d+)>")
    sources = []
    for name in names:
        found = set(pattern.findall(str(name)))
        if len(found) != 1:
            shown = pattern.sub(lambda m: f"x{m.group(1)}", str(name))
            raise Unexplainable(f"its preprocessing output {shown!r} does not come from exactly one feature")
        sources.append(int(found.pop()))
    return np.array(sources, dtype=np.intp)


def _transformed(prepare: Any, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if prepare is None:
        return np.asarray(matrix, dtype=np.float64)
    columns = prepare.transform(matrix)
    if scipy.sparse.issparse(columns):
        columns = columns.toarray()
    return np.asarray(columns, dtype=np.float64)


class LinearExplainer:
    """``w_j z_j(x)`` per column, summed per feature; base ``b`` (see the module docstring)."""

    def __init__(self, prepare: Any, model: Any, aggregate: np.ndarray[Any, Any]):
        self._prepare = prepare
        self._aggregate = aggregate
        self._coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
        outputs = self._coef.shape[0]
        if outputs > 1 and not hasattr(model, "classes_"):
            raise Unexplainable(f"a regressor with {outputs} targets")
        self._intercept = np.broadcast_to(
            np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64)), (outputs,)
        ).copy()

    def explain(self, matrix: np.ndarray[Any, Any]) -> Contributions:
        columns = _transformed(self._prepare, matrix)
        if self._coef.shape[0] == 1:
            explained = np.zeros(len(columns), dtype=np.intp)
        else:
            explained = np.argmax(columns @ self._coef.T + self._intercept, axis=1)
        per_column = columns * self._coef[explained]
        return Contributions(per_column @ self._aggregate, self._intercept[explained])


class TreeExplainer:
    """Saabas attribution over a forest's (or one tree's) decision paths."""

    def __init__(self, prepare: Any, model: Any, aggregate: np.ndarray[Any, Any]):
        if getattr(model, "n_outputs_", 1) != 1:
            raise Unexplainable(f"a model with {model.n_outputs_} outputs")
        self._prepare = prepare
        self._model = model
        self._aggregate = aggregate
        self._classifier = hasattr(model, "classes_")
        self._trees = [e.tree_ for e in model.estimators_] if hasattr(model, "estimators_") else [model.tree_]
        self._lock = threading.Lock()
        self._moves: list[scipy.sparse.csr_matrix] | None = None
        self._base = np.zeros(0)

    def _build(self) -> list[scipy.sparse.csr_matrix]:
        """Per output column k, a sparse [all nodes, model columns] matrix: at each child node,
        the change of value k from its parent, in the parent's split column."""
        with self._lock:
            if self._moves is not None:
                return self._moves
            rows, columns, moves = [], [], []
            base = None
            offset = 0
            for tree in self._trees:
                value = np.asarray(tree.value[:, 0, :], dtype=np.float64)
                if self._classifier:
                    # Stored as fractions since scikit-learn 1.4; counts before. Leaves then
                    # hold exactly what the tree's predict_proba returns.
                    value = value / value.sum(axis=1, keepdims=True)
                parents = np.flatnonzero(tree.children_left >= 0)
                children = np.concatenate([tree.children_left[parents], tree.children_right[parents]])
                parents = np.concatenate([parents, parents])
                rows.append(children + offset)
                columns.append(tree.feature[parents])
                moves.append(value[children] - value[parents])
                base = value[0] if base is None else base + value[0]
                offset += tree.node_count
            row_index, column_index = np.concatenate(rows), np.concatenate(columns)
            move = np.concatenate(moves)
            shape = (offset, self._aggregate.shape[0])
            self._moves = [
                scipy.sparse.csr_matrix((move[:, k], (row_index, column_index)), shape=shape)
                for k in range(move.shape[1])
            ]
            assert base is not None
            self._base = base / len(self._trees)
            return self._moves

    def explain(self, matrix: np.ndarray[Any, Any]) -> Contributions:
        moves = self._build()
        columns = _transformed(self._prepare, matrix)
        paths = self._model.decision_path(columns)
        if isinstance(paths, tuple):  # forests also return where each tree's nodes start
            paths = paths[0]
        paths = scipy.sparse.csr_matrix(paths, dtype=np.float64)
        rows = np.arange(len(columns))
        # A binary classifier is explained toward its second class; otherwise every output
        # is computed and each row keeps the one it predicts.
        outputs = [1] if self._classifier and len(moves) == 2 else list(range(len(moves)))
        per_output = np.stack([(paths @ moves[k]).toarray() for k in outputs]) / len(self._trees)
        if len(outputs) == 1:
            chosen = np.zeros(len(rows), dtype=np.intp)
        else:
            chosen = np.argmax(per_output.sum(axis=2).T + self._base[outputs], axis=1)
        explained = np.asarray(outputs, dtype=np.intp)[chosen]
        return Contributions(per_output[chosen, rows] @ self._aggregate, self._base[explained])


class BoostedTreeExplainer:
    """Exact TreeSHAP for histogram gradient boosting, through shap's ``TreeExplainer``
    (built on the first explanation: importing shap takes seconds)."""

    def __init__(self, prepare: Any, model: Any, aggregate: np.ndarray[Any, Any]):
        self._prepare = prepare
        self._model = model
        self._aggregate = aggregate
        self._lock = threading.Lock()
        self._explainer: Any = None

    def _built(self) -> Any:
        with self._lock:
            if self._explainer is None:
                import shap  # imported on use: seconds, and only histogram boosting needs it

                self._explainer = shap.TreeExplainer(self._model)
            return self._explainer

    def explain(self, matrix: np.ndarray[Any, Any]) -> Contributions:
        explainer = self._built()
        columns = _transformed(self._prepare, matrix)
        values = np.asarray(explainer.shap_values(columns, check_additivity=False), dtype=np.float64)
        base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        # One raw score (two classes, regression): [rows, columns]; k classes: [rows, columns, k].
        per_output = values[:, None, :] if values.ndim == 2 else values.transpose(0, 2, 1)
        explained = toward_predicted(per_output, base)
        return Contributions(explained.values @ self._aggregate, explained.base)
