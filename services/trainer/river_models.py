"""The river families: models that learn one row at a time, stored with the ``river-hmac`` flavor.

:class:`RiverEstimator` builds and fits a river pipeline for a family and is the flavor's
runtime (:class:`~services.common.flavors.river.RiverRuntime`) for it, so the scikit-learn
surface the trainer's search, gates and importances use (``fit``, ``predict_proba``,
``predict``, ``classes_``) turns rows into river's dicts exactly as serving does. ``fit``
learns the rows one by one in time order, as the model would have met them. What is
stored is the river pipeline itself (:attr:`RiverEstimator.model`), pickled and signed:
river has no code-free format.

The river pipeline takes one dict per row, keyed by feature name: numbers as floats
(``None`` when missing, imputed with the running mean), categories as text
(``"__missing__"`` when missing).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from river import compose, linear_model, multiclass, preprocessing, stats, tree

from services.common.clients.datasets import WindowDigest
from services.common.flavors.river import RiverRuntime, river_row
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import DataWindow, MaterializedWindow, Task
from services.trainer.scoring import classification_scores, regression_scores
from services.trainer.tabular import Feature, FeatureKind, feature_matrix, target_vector

# Estimator classes by (family, task); their JSON-valued constructor arguments are the
# family's parameters. Object-valued ones (optimizers, losses, splitters) are not settable.
_ESTIMATORS: dict[tuple[str, int], Any] = {
    ("river_logistic_regression", Task.TASK_CLASSIFICATION): linear_model.LogisticRegression,
    ("river_linear_regression", Task.TASK_REGRESSION): linear_model.LinearRegression,
    ("river_hoeffding_tree", Task.TASK_CLASSIFICATION): tree.HoeffdingTreeClassifier,
    ("river_hoeffding_tree", Task.TASK_REGRESSION): tree.HoeffdingTreeRegressor,
}
_NOT_SETTABLE = frozenset(
    {"optimizer", "loss", "initializer", "splitter", "nominal_attributes", "leaf_model"}
)
SCALED = frozenset({"river_logistic_regression", "river_linear_regression"})


def parameter_names(family: str, task: Task.ValueType) -> set[str]:
    cls = _ESTIMATORS[(family, task)]
    names = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    return names - _NOT_SETTABLE


class RiverEstimator(RiverRuntime):
    """A river family with the scikit-learn surface the trainer needs (see the module docstring)."""

    def __init__(
        self,
        family: str,
        task: Task.ValueType,
        params: Mapping[str, Any],
        features: Sequence[Feature] = (),
    ):
        super().__init__(
            None,
            [f.name for f in features],
            {f.name for f in features if f.kind is FeatureKind.CATEGORICAL},
            task,
        )
        self.family = family
        self.params = dict(params)
        self.features = tuple(features)

    def with_features(self, features: Sequence[Feature]) -> RiverEstimator:
        return RiverEstimator(self.family, self.task, self.params, features)

    @classmethod
    def fitted(
        cls,
        model: Any,
        family: str,
        task: Task.ValueType,
        features: Sequence[Feature],
        classes: Sequence[str],
    ) -> RiverEstimator:
        """Wrap a river pipeline learned elsewhere (a production version, the online learner)."""
        estimator = cls(family, task, {}, features)
        estimator.model = model
        if task == Task.TASK_CLASSIFICATION:
            estimator.classes_ = np.array(list(classes), dtype=object)
        return estimator

    @property
    def labels(self) -> list[str]:
        """The classes met so far (none for a regressor)."""
        return [] if self.classes_ is None else [str(c) for c in self.classes_]

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {name: self.params.get(name) for name in parameter_names(self.family, self.task)}

    def _validate_params(self) -> None:
        """Building the estimator is how river checks its arguments."""
        self._estimator()

    def _estimator(self) -> Any:
        cls = _ESTIMATORS[(self.family, self.task)]
        if self.family == "river_hoeffding_tree":
            categorical = [f.name for f in self.features if f.kind is FeatureKind.CATEGORICAL]
            return cls(**self.params, nominal_attributes=categorical or None)
        estimator = cls(**self.params)
        if self.task == Task.TASK_CLASSIFICATION:
            # River's logistic regression is binary; one-vs-rest makes it take any labels.
            return multiclass.OneVsRestClassifier(estimator)
        return estimator

    def build(self) -> Any:
        """A fresh, untrained river pipeline for this family and these features."""
        numeric = [f.name for f in self.features if f.kind is FeatureKind.NUMERIC]
        categorical = [f.name for f in self.features if f.kind is FeatureKind.CATEGORICAL]
        parts: list[Any] = []
        if numeric:
            branch = compose.Select(*numeric) | preprocessing.StatImputer(
                *[(n, stats.Mean()) for n in numeric]
            )
            if self.family in SCALED:
                branch = branch | preprocessing.StandardScaler()
            parts.append(branch)
        if categorical:
            selected = compose.Select(*categorical)
            parts.append(selected | preprocessing.OneHotEncoder() if self.family in SCALED else selected)
        prepare = parts[0] if len(parts) == 1 else compose.TransformerUnion(*parts)
        return prepare | self._estimator()

    def fit(self, X: np.ndarray, y: np.ndarray) -> RiverEstimator:
        self.model = self.build()
        learn(self, X, y)
        if self.task == Task.TASK_CLASSIFICATION:
            self.classes_ = np.array(sorted({str(label) for label in y}), dtype=object)
        return self


def learn(estimator: RiverEstimator, X: np.ndarray, y: np.ndarray) -> None:
    """Feed the estimator's river pipeline the rows of ``(X, y)`` one at a time, in order."""
    classify = estimator.task == Task.TASK_CLASSIFICATION
    for row, target in zip(X, y, strict=True):
        estimator.model.learn_one(
            river_row(estimator.feature_names, estimator.categorical, row.tolist()),
            str(target) if classify else float(target),
        )


class OnlineSession:
    """A production river version learning from the feature stream, test-then-train.

    Each labelled row is first predicted (that prediction is scored: progressive
    validation) and then learned. ``positions`` holds, per partition of the feature
    topic, the offset of the next record to learn, so a session resumed from a snapshot
    learns every record after it exactly once, whatever order partitions interleave
    in. A session resumed from a batch-trained version also has a ``floor``: rows no
    newer than the newest row of its training window were already learned.

    What was learned since the version is summarised as a window hashed like the dataset
    API hashes one (canonical rows in event-time, event-id order), so the snapshot's
    lineage names exactly the rows that made it.
    """

    def __init__(
        self,
        *,
        model_name: str,
        version: int,
        dataset: str,
        estimator: RiverEstimator,
        positions: Mapping[int, int],
        floor_ns: int = 0,
    ):
        self.model_name = model_name
        self.version = version
        # This version and the snapshots learned from it: production moving to any other
        # version (a batch retrain, a rollback) means starting over from that one.
        self.versions = {version}
        self.dataset = dataset
        self.estimator = estimator
        self.positions = dict(positions)
        self.floor_ns = floor_ns
        self._reset()

    def _reset(self) -> None:
        self._rows: list[tuple[int, str, FeatureRow]] = []
        self._truth: list[Any] = []
        self._proba: list[np.ndarray] = []
        self._values: list[float] = []

    @property
    def learned(self) -> int:
        return len(self._rows)

    def offer(self, row: FeatureRow, partition: int, offset: int) -> bool:
        """Learn ``row`` (read at ``partition``/``offset``) if it is this model's to learn; whether it was."""
        if offset < self.positions.get(partition, 0):
            return False
        self.positions[partition] = offset + 1
        event_ns = row.event_time.ToNanoseconds()
        if row.dataset != self.dataset or not row.label.WhichOneof("kind") or event_ns <= self.floor_ns:
            return False
        estimator = self.estimator
        X = feature_matrix([row], estimator.features)
        y = target_vector([row], estimator.task, "label")
        if estimator.task == Task.TASK_CLASSIFICATION:
            self._proba.append(estimator.predict_proba(X)[0])
            if str(y[0]) not in estimator.labels:
                estimator.classes_ = np.array(sorted({*estimator.labels, str(y[0])}), dtype=object)
        else:
            self._values.append(float(estimator.predict(X)[0]))
        self._truth.append(y[0])
        learn(estimator, X, y)
        self._rows.append((event_ns, row.event_id, row))
        return True

    def scores(self) -> dict[str, float]:
        """Progressive-validation metrics over the rows learned since the version."""
        if self.estimator.task != Task.TASK_CLASSIFICATION:
            return regression_scores(np.array(self._truth, dtype=float), np.array(self._values))
        truth = np.array(self._truth, dtype=object)
        classes = np.array(sorted(self.estimator.labels), dtype=object)
        # Rows predicted before a class first appeared lack its column: it had probability 0 then.
        proba = np.array([np.pad(p, (0, len(classes) - len(p))) for p in self._proba])
        return classification_scores(truth, classes[np.argmax(proba, axis=1)], proba, classes)

    def span(self, schema_version: int) -> MaterializedWindow:
        """The rows learned since the version, as a window: bounds, count and content hash."""
        ordered = sorted(self._rows, key=lambda item: (item[0], item[1]))
        digest = WindowDigest()
        for _, _, row in ordered:
            digest.update(row)
        window = MaterializedWindow(
            window=DataWindow(dataset=self.dataset),
            content_sha256=digest.hexdigest(),
            row_count=digest.row_count,
            schema_version=schema_version,
        )
        if ordered:
            window.window.start_time.FromNanoseconds(ordered[0][0])
            window.window.end_time.FromNanoseconds(ordered[-1][0])
        return window

    def snapshot_taken(self, version: int) -> None:
        """The learned rows are now version ``version``: start a new span from here."""
        self.version = version
        self.versions.add(version)
        self.floor_ns = 0
        self._reset()
