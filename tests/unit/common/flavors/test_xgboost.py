"""The xgboost flavor: boosters in XGBoost's own format predict and explain as in process."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xgboost

from services.common.artifacts import ArtifactError, sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.proto.mlops.v1 import model_pb2
from tests.unit.common.flavors.conftest import Data, round_trip

XGB = flavor("xgboost")


def test_a_binary_classifier_gives_xgboosts_probabilities_and_exact_contributions(binary: Data) -> None:
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(binary.X, binary.y)
    _, runtime = round_trip("xgboost", model)
    rows = binary.gappy_rows
    np.testing.assert_allclose(runtime.predict_proba(rows), model.predict_proba(rows), atol=1e-6)
    assert runtime.predict(rows).tolist() == [str(v) for v in model.predict(rows)]
    assert runtime.task == model_pb2.TASK_CLASSIFICATION and runtime.positional_classes
    explained = runtime.explainer().explain(rows)
    assert explained.values.shape == (64, 5) and explained.base.shape == (64,)
    # TreeSHAP in the margin: the log-odds of the second class.
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, model.predict(rows, output_margin=True), atol=1e-5
    )


def test_a_multiclass_classifier_is_explained_toward_each_rows_predicted_class(multiclass: Data) -> None:
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(multiclass.X, multiclass.y)
    _, runtime = round_trip("xgboost", model)
    rows = multiclass.rows
    np.testing.assert_allclose(runtime.predict_proba(rows), model.predict_proba(rows), atol=1e-6)
    margins = model.predict(rows, output_margin=True)
    explained = runtime.explainer().explain(rows)
    np.testing.assert_allclose(explained.values.sum(axis=1) + explained.base, margins.max(axis=1), atol=1e-5)
    assert runtime.classes_ is not None and list(runtime.classes_) == ["0", "1", "2"]


def test_a_regressor_and_a_bare_booster_with_feature_names(regression: Data) -> None:
    model = xgboost.XGBRegressor(n_estimators=20).fit(regression.X, regression.y)
    _, runtime = round_trip("xgboost", model)
    np.testing.assert_allclose(
        runtime.predict(regression.gappy_rows), model.predict(regression.gappy_rows), atol=1e-6
    )
    assert runtime.task == model_pb2.TASK_REGRESSION and runtime.classes_ is None

    names = [f"x{i}" for i in range(5)]
    booster = xgboost.train(
        {"objective": "reg:squarederror"},
        xgboost.DMatrix(regression.X, regression.y, feature_names=names),
        num_boost_round=5,
    )
    inferred = XGB.infer_signature(XGB.save(booster).data)
    assert (inferred.task, inferred.n_features, inferred.feature_names) == (
        model_pb2.TASK_REGRESSION,
        5,
        tuple(names),
    )
    assert inferred.unknown == ()
    # Serving hands every booster an unnamed matrix, in the signature's order: a named one explains too.
    _, named = round_trip("xgboost", booster)
    explained = named.explainer().explain(regression.rows)
    margin = booster.predict(xgboost.DMatrix(regression.rows, feature_names=names), output_margin=True)
    np.testing.assert_allclose(explained.values.sum(axis=1) + explained.base, margin, rtol=1e-6, atol=1e-5)


def test_the_signature_says_what_a_classifier_booster_cannot(binary: Data) -> None:
    model = xgboost.XGBClassifier(n_estimators=5).fit(binary.X, binary.y)
    inferred = XGB.infer_signature(XGB.save(model).data)
    assert (inferred.task, inferred.n_features, inferred.classes) == (
        model_pb2.TASK_CLASSIFICATION,
        5,
        ("0", "1"),
    )
    assert inferred.unknown == (
        "feature names: the booster was fitted on an unnamed matrix",
        "class names: the booster knows 2 classes by position only",
    )


def test_json_models_load_too(binary: Data) -> None:
    model = xgboost.XGBClassifier(n_estimators=5).fit(binary.X, binary.y)
    data = bytes(model.get_booster().save_raw(raw_format="json"))
    runtime = XGB.load(StoredArtifact(data, sha256_hex(data)))
    np.testing.assert_allclose(
        runtime.predict_proba(binary.rows), model.predict_proba(binary.rows), atol=1e-6
    )


def test_pickles_and_garbage_are_refused_by_name(binary: Data) -> None:
    model = xgboost.XGBClassifier(n_estimators=5).fit(binary.X, binary.y)
    with pytest.raises(ArtifactError, match="xgboost artifact refused: the bytes are a Python pickle"):
        XGB.verify(pickle.dumps(model))
    with pytest.raises(ArtifactError, match="not a loadable xgboost artifact"):
        XGB.verify(b'{"learner": "not a model"}')
