"""The lightgbm flavor: boosters in LightGBM's text format predict and explain as in process."""

from __future__ import annotations

import pickle

import lightgbm
import numpy as np
import pytest

from services.common.artifacts import ArtifactError
from services.common.flavors import flavor
from services.common.proto.mlops.v1 import model_pb2
from tests.unit.common.flavors.conftest import Data, round_trip

LGB = flavor("lightgbm")


def test_a_binary_classifier_gives_lightgbms_probabilities_and_exact_contributions(binary: Data) -> None:
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(binary.X, binary.y)
    _, runtime = round_trip("lightgbm", model)
    rows = binary.gappy_rows
    np.testing.assert_allclose(runtime.predict_proba(rows), model.predict_proba(rows), atol=1e-6)
    assert runtime.predict(rows).tolist() == [str(v) for v in model.predict(rows)]
    explained = runtime.explainer().explain(rows)
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, model.predict(rows, raw_score=True), atol=1e-6
    )


def test_a_multiclass_classifier_is_explained_toward_each_rows_predicted_class(multiclass: Data) -> None:
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(multiclass.X, multiclass.y)
    _, runtime = round_trip("lightgbm", model)
    rows = multiclass.rows
    np.testing.assert_allclose(runtime.predict_proba(rows), model.predict_proba(rows), atol=1e-6)
    explained = runtime.explainer().explain(rows)
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base,
        np.asarray(model.predict(rows, raw_score=True)).max(axis=1),
        atol=1e-6,
    )
    assert runtime.classes_ is not None and list(runtime.classes_) == ["0", "1", "2"]


def test_a_regressor_with_feature_names_says_what_it_is(regression: Data) -> None:
    names = [f"x{i}" for i in range(5)]
    model = lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(
        regression.X, regression.y, feature_name=names
    )
    _, runtime = round_trip("lightgbm", model)
    np.testing.assert_allclose(
        runtime.predict(regression.gappy_rows), model.booster_.predict(regression.gappy_rows), atol=1e-6
    )
    inferred = LGB.infer_signature(LGB.save(model).data)
    assert (inferred.task, inferred.n_features, inferred.feature_names, inferred.unknown) == (
        model_pb2.TASK_REGRESSION,
        5,
        tuple(names),
        (),
    )


def test_default_column_names_are_no_names(binary: Data) -> None:
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(binary.X, binary.y)
    inferred = LGB.infer_signature(LGB.save(model).data)
    assert inferred.feature_names == () and inferred.classes == ("0", "1")
    assert "feature names: the booster was fitted on an unnamed matrix" in inferred.unknown


def test_pickles_and_other_text_are_refused_by_name(binary: Data) -> None:
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(binary.X, binary.y)
    with pytest.raises(ArtifactError, match="lightgbm artifact refused: the bytes are a Python pickle"):
        LGB.verify(pickle.dumps(model))
    with pytest.raises(ArtifactError, match="starts with 'tree'"):
        LGB.verify(b"objective=binary\n")
    with pytest.raises(ArtifactError, match="not a loadable lightgbm artifact"):
        LGB.verify(b"tree\nversion=v4\n")
