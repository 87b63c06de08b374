"""Pipelines from specs: every family trains on mixed, incomplete data, survives the
platform's artifact check, and predicts the same after loading as before."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.common.proto.mlops.v1.model_pb2 import Task
from services.trainer.pipelines import FAMILIES, build_pipeline, converged
from services.trainer.tabular import Feature, FeatureKind, build_table, feature_matrix
from tests.helpers.artifacts import artifact_of, opened
from tests.unit.trainer import synthetic

FEATURES = synthetic.FEATURES
CLASSIFIERS = ["logistic_regression", "hist_gradient_boosting", "random_forest"]
REGRESSORS = ["linear_regression", "hist_gradient_boosting", "random_forest"]


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray]:
    rows = synthetic.rows(400, seed=3)
    for row in rows[::10]:
        del row.features["f1"]  # missing numbers
    for row in rows[5::10]:
        del row.features["color"]  # missing categories
    built = build_table(rows, FEATURES, Task.TASK_CLASSIFICATION, "label")
    return built.X, built.y


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_classifiers_learn_missing_values_and_round_trip_through_the_trusted_loader(
    family: str, table: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = table
    pipeline = build_pipeline(FAMILIES[family], Task.TASK_CLASSIFICATION, FEATURES, {}, seed=1)
    pipeline.fit(X[:300], y[:300])
    assert pipeline.score(X[300:], y[300:]) > 0.75
    unseen = X[300:310].copy()
    unseen[:, 2] = "purple"  # a category never seen in training is not an error
    loaded = opened("skops", artifact_of(pipeline))
    np.testing.assert_array_equal(loaded.predict_proba(unseen), pipeline.predict_proba(unseen))
    assert loaded.classes_ is not None and list(loaded.classes_) == ["0", "1"]


@pytest.mark.parametrize("family", REGRESSORS)
def test_regressors_learn_and_round_trip(family: str, table: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = table
    target = np.array([2.0 * (v if isinstance(v, float) and math.isfinite(v) else 0.0) for v in X[:, 0]])
    pipeline = build_pipeline(FAMILIES[family], Task.TASK_REGRESSION, FEATURES, {}, seed=1)
    pipeline.fit(X[:300], target[:300])
    assert pipeline.score(X[300:], target[300:]) > 0.8
    np.testing.assert_array_equal(
        opened("skops", artifact_of(pipeline)).predict(X[300:]), pipeline.predict(X[300:])
    )


def test_numeric_only_pipelines_accept_the_float_tensor_serving_sends() -> None:
    features = (Feature("f0", FeatureKind.NUMERIC), Feature("f1", FeatureKind.NUMERIC))
    rows = synthetic.rows(200, seed=4)
    X = feature_matrix(rows, features)
    assert X.dtype == np.float64
    y = build_table(rows, features, Task.TASK_CLASSIFICATION, "label").y
    for family in CLASSIFIERS:
        pipeline = build_pipeline(FAMILIES[family], Task.TASK_CLASSIFICATION, features, {}, seed=0).fit(X, y)
        assert pipeline.predict_proba(X[:5].astype(np.float32)).shape == (5, 2)


def test_linear_models_are_scaled_so_a_features_units_do_not_matter(
    table: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = table
    in_grams = X.copy()
    in_grams[:, 0] = np.array([v * 1000.0 for v in X[:, 0]], dtype=object)
    family = FAMILIES["logistic_regression"]
    base = build_pipeline(family, Task.TASK_CLASSIFICATION, FEATURES, {}, seed=0).fit(X, y)
    rescaled = build_pipeline(family, Task.TASK_CLASSIFICATION, FEATURES, {}, seed=0).fit(in_grams, y)
    np.testing.assert_allclose(base.predict_proba(X), rescaled.predict_proba(in_grams), atol=1e-6)


def test_the_seed_reaches_the_estimator() -> None:
    pipeline = build_pipeline(FAMILIES["random_forest"], Task.TASK_CLASSIFICATION, FEATURES, {}, seed=42)
    assert pipeline.named_steps["model"].random_state == 42


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_logistic_regression_stopped_at_its_iteration_cap_did_not_converge(
    table: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = table
    family = FAMILIES["logistic_regression"]
    capped = build_pipeline(family, Task.TASK_CLASSIFICATION, FEATURES, {"max_iter": 1}, seed=0).fit(X, y)
    ok, why = converged(capped)
    assert not ok
    assert "max_iter=1" in why
    assert converged(build_pipeline(family, Task.TASK_CLASSIFICATION, FEATURES, {}, seed=0).fit(X, y)) == (
        True,
        "",
    )
