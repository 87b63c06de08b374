"""Feature contributions: exact, in feature order, refused where no exact method exists,
and computed only when a request asks for them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from services.common.flavors.explain import Contributions
from services.common.flavors.sklearn_explain import explainer_for
from services.common.flavors.skops import SklearnRuntime
from services.common.proto.mlops.v1 import model_pb2
from services.common.proto.mlops.v1.model_pb2 import Task
from services.serving.errors import InvalidInput
from services.serving.inference import InferenceRequest, InferenceService
from services.serving.models import ModelManager
from services.serving.predictor import CONTRIBUTIONS, CONTRIBUTIONS_BASE, Predictor
from services.serving.tensors import Tensor
from services.trainer.pipelines import FAMILIES, build_pipeline
from services.trainer.tabular import Table, build_table
from tests.unit.serving.conftest import Fitted, classifier_signature
from tests.unit.serving.test_models import MemoryRegistry
from tests.unit.trainer import synthetic

FEATURES = synthetic.FEATURES
NAMES = [f.name for f in FEATURES]


@pytest.fixture(scope="module")
def table() -> Table:
    """The trainer's layout: an object matrix with a text category, a binary label."""
    return build_table(synthetic.rows(400, seed=3), FEATURES, Task.TASK_CLASSIFICATION, "label")


@pytest.fixture(scope="module")
def regression_table(table: Table) -> Table:
    y = np.array([2.0 * row[0] - row[1] + (3.0 if row[2] == "red" else 0.0) for row in table.X])
    return Table(table.features, table.X, y, table.event_ids)


def trained(family: str, data: Table, task: Task.ValueType = Task.TASK_CLASSIFICATION, **params: Any) -> Any:
    """A pipeline exactly as the trainer builds it for ``family``."""
    return build_pipeline(FAMILIES[family], task, FEATURES, params, seed=0).fit(data.X, data.y)


def signature(task: Task.ValueType, classes: Sequence[str] = ()) -> model_pb2.Signature:
    return model_pb2.Signature(
        inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, 4], allow_nan=True)],
        feature_names=NAMES,
        classes=list(classes),
        task=task,
    )


def test_linear_contributions_add_up_to_the_log_odds_in_feature_order(table: Table) -> None:
    pipeline = trained("logistic_regression", table)
    explained = explainer_for(pipeline, 4).explain(table.X[:50])
    assert explained.values.shape == (50, 4) and explained.base.shape == (50,)
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, pipeline.decision_function(table.X[:50]), atol=1e-9
    )
    # The base is the intercept; a category's contribution is its one-hot weight.
    model = pipeline[-1]
    np.testing.assert_allclose(explained.base, model.intercept_[0])
    red = [i for i, row in enumerate(table.X[:50]) if row[2] == "red"]
    assert len({round(v, 12) for v in explained.values[red, 2]}) == 1


@pytest.mark.parametrize("column", [0, 1, 2, 3])
def test_changing_one_feature_moves_only_its_own_contribution(table: Table, column: int) -> None:
    """Order check through the scaler and one-hot encoder: column i is feature i."""
    pipeline = trained("logistic_regression", table)
    explainer = explainer_for(pipeline, 4)
    row = table.X[:1].copy()
    changed = row.copy()
    changed[0, column] = {0: 2.5, 1: -1.5, 2: "blue" if row[0, 2] != "blue" else "green", 3: 1 - row[0, 3]}[
        column
    ]
    before, after = explainer.explain(row).values[0], explainer.explain(changed).values[0]
    moved = np.flatnonzero(~np.isclose(before, after, atol=1e-12))
    assert moved.tolist() == [column]


def test_ridge_contributions_add_up_to_the_predicted_value(regression_table: Table) -> None:
    pipeline = trained("linear_regression", regression_table, Task.TASK_REGRESSION)
    explained = explainer_for(pipeline, 4).explain(regression_table.X[:40])
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, pipeline.predict(regression_table.X[:40]), atol=1e-9
    )


def test_random_forest_contributions_add_up_to_the_probability_and_the_value(
    table: Table, regression_table: Table
) -> None:
    classifier = trained("random_forest", table, n_estimators=20)
    explained = explainer_for(classifier, 4).explain(table.X[:40])
    assert explained.values.shape == (40, 4)
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, classifier.predict_proba(table.X[:40])[:, 1], atol=1e-9
    )
    # The base is what the forest predicts before any split: the training share of the class.
    assert 0.3 < explained.base[0] < 0.7
    regressor = trained("random_forest", regression_table, Task.TASK_REGRESSION, n_estimators=20)
    explained = explainer_for(regressor, 4).explain(regression_table.X[:40])
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, regressor.predict(regression_table.X[:40]), atol=1e-9
    )
    # The label depends on f0, f1 and color, not on flag: flag's share is small.
    assert np.abs(explained.values[:, 3]).mean() < np.abs(explained.values[:, 0]).mean()


def test_multiclass_models_are_explained_toward_each_rows_predicted_class() -> None:
    X, y = make_classification(
        n_samples=300, n_features=5, n_informative=4, n_redundant=0, n_classes=3, random_state=0
    )
    for model, margin in [
        (LogisticRegression(max_iter=500).fit(X, y), "decision_function"),
        (RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y), "predict_proba"),
        (HistGradientBoostingClassifier(max_iter=10).fit(X, y), "decision_function"),
    ]:
        margins = getattr(model, margin)(X[:60])
        explained = explainer_for(model, 5).explain(X[:60])
        predicted = np.argmax(margins, axis=1)
        np.testing.assert_allclose(
            explained.values.sum(axis=1) + explained.base, margins[np.arange(60), predicted], atol=1e-9
        )


def test_histogram_boosting_contributions_add_up_to_its_raw_score(
    table: Table, regression_table: Table
) -> None:
    """Exact TreeSHAP through the trainer's own pipeline (ordinal categories, missing values)."""
    boosted = trained("hist_gradient_boosting", table, max_iter=20)
    rows = table.X[:40].copy()
    rows[0, 0] = np.nan  # missing values follow each split's learned direction, as in predict
    explained = explainer_for(boosted, 4).explain(rows)
    assert explained.values.shape == (40, 4)
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, boosted.decision_function(rows), atol=1e-9
    )
    regressor = trained("hist_gradient_boosting", regression_table, Task.TASK_REGRESSION, max_iter=20)
    explained = explainer_for(regressor, 4).explain(regression_table.X[:40])
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, regressor.predict(regression_table.X[:40]), atol=1e-9
    )
    # The target is 2 f0 - f1 + 3 [red]: flag plays no part.
    assert np.abs(explained.values[:, 3]).mean() < 0.1 * np.abs(explained.values[:, 0]).mean()


def test_models_without_an_exact_method_are_refused_by_name() -> None:
    X, y = make_classification(n_samples=100, n_features=4, random_state=0)
    neighbours = Predictor(
        "m", 1, SklearnRuntime(KNeighborsClassifier().fit(X, y)), classifier_signature(4, ["0", "1"])
    )
    assert neighbours.explainer is None
    assert CONTRIBUTIONS not in neighbours.outputs
    for requested, explain in [(["contributions"], False), ([], True), (["label"], True)]:
        with pytest.raises(
            InvalidInput, match="model family 'KNeighborsClassifier' does not support contributions"
        ):
            neighbours.check_outputs(requested, explain)
    # Preprocessing that mixes features has no per-feature answer either.
    X, y = make_regression(n_samples=100, n_features=4, random_state=0)
    mixed = Pipeline([("pca", PCA(2)), ("model", LogisticRegression())]).fit(X, y > 0)
    mixing = Predictor("m", 1, SklearnRuntime(mixed), classifier_signature(4, ["false", "true"]))
    assert "does not come from exactly one feature" in mixing.cannot_explain
    assert "model family 'LogisticRegression'" in mixing.cannot_explain


def test_contributions_are_declared_only_by_versions_that_explain_and_returned_only_when_asked(
    table: Table,
) -> None:
    predictor = Predictor(
        "m",
        1,
        SklearnRuntime(trained("logistic_regression", table)),
        signature(Task.TASK_CLASSIFICATION, ["0", "1"]),
    )
    assert predictor.outputs[CONTRIBUTIONS].shape == (-1, 4)
    assert predictor.outputs[CONTRIBUTIONS_BASE].shape == (-1,)
    assert predictor.check_outputs([]) == ["probabilities", "label"]
    assert predictor.check_outputs([], explain=True) == [
        "probabilities",
        "label",
        CONTRIBUTIONS,
        CONTRIBUTIONS_BASE,
    ]
    assert predictor.check_outputs(["label"], explain=True) == ["label", CONTRIBUTIONS, CONTRIBUTIONS_BASE]
    assert predictor.check_outputs([CONTRIBUTIONS]) == [CONTRIBUTIONS]


class CountingExplainer:
    def __init__(self, inner: Any):
        self.inner = inner
        self.rows: list[int] = []

    def explain(self, matrix: np.ndarray) -> Contributions:
        self.rows.append(len(matrix))
        explained: Contributions = self.inner.explain(matrix)
        return explained


async def test_the_data_plane_explains_only_requests_that_ask(classifier: Fitted) -> None:
    registry = MemoryRegistry()
    registry.add("iris", 1, classifier)
    registry.alias("iris", "production", 1)
    manager = ModelManager(registry)
    await manager.sync_all()
    predictor = manager.route("iris").target.predictor
    counting = CountingExplainer(predictor.explainer)
    predictor.explainer = counting
    service = InferenceService(manager, max_rows=100)
    X = classifier.X[:3]

    def request(**kwargs: Any) -> InferenceRequest:
        return InferenceRequest(
            model_name="iris", decode_inputs=lambda: [Tensor("features", "FP64", X.shape, X)], **kwargs
        )

    plain = await service.infer(request())
    assert [o.name for o in plain.outputs] == ["probabilities", "label"]
    await service.infer(request(parameters={"explain": False}, outputs=["label"]))
    assert counting.rows == []

    explained = await service.infer(request(parameters={"explain": True}))
    outputs = {o.name: o for o in explained.outputs}
    assert list(outputs) == ["probabilities", "label", CONTRIBUTIONS, CONTRIBUTIONS_BASE]
    assert outputs[CONTRIBUTIONS].shape == (3, 4) and outputs[CONTRIBUTIONS].datatype == "FP64"
    # Three classes: toward each row's predicted class, whose log-odds the sum gives back.
    margins = classifier.estimator.decision_function(X)
    np.testing.assert_allclose(
        outputs[CONTRIBUTIONS].data.sum(axis=1) + outputs[CONTRIBUTIONS_BASE].data,
        margins.max(axis=1),
        atol=1e-9,
    )
    only = await service.infer(request(outputs=[CONTRIBUTIONS]))
    assert [o.name for o in only.outputs] == [CONTRIBUTIONS]
    assert counting.rows == [3, 3]

    with pytest.raises(InvalidInput, match="parameter 'explain' must be a boolean, got str"):
        await service.infer(request(parameters={"explain": "yes"}))
