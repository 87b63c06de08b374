"""The signature decides what a version accepts and returns."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import sklearn
import xgboost
from sklearn.datasets import make_classification

from services.common.artifacts import sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.proto.mlops.v1 import model_pb2
from services.serving.errors import InvalidInput, TooLarge
from services.serving.predictor import Predictor, SignatureError, configure_predict_thread
from services.serving.tensors import Tensor, encode_bytes_elements, from_raw
from tests.unit.serving.conftest import Fitted, classifier_signature


def matrix(data: np.ndarray, datatype: str = "FP64", name: str = "features") -> Tensor:
    return Tensor(name, datatype, tuple(data.shape), data)


def test_predictions_match_the_estimator_and_labels_follow_the_class_order(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    batch = predictor.assemble([matrix(classifier.X[:10])], max_rows=100)
    outputs = predictor.predict(batch.matrix)
    np.testing.assert_allclose(
        outputs["probabilities"], classifier.estimator.predict_proba(classifier.X[:10])
    )
    assert outputs["label"].tolist() == classifier.estimator.predict(classifier.X[:10]).tolist()
    assert list(predictor.default_outputs) == ["probabilities", "label"]
    assert predictor.outputs["probabilities"].shape == (-1, 3)


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "INT64"])
def test_other_numeric_datatypes_are_accepted_for_the_matrix(classifier: Fitted, datatype: str) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    dtype = {"FP32": "<f4", "INT32": "<i4", "INT64": "<i8"}[datatype]
    data = np.round(classifier.X[:3]).astype(dtype)
    batch = predictor.assemble([from_raw("features", datatype, [3, 4], data.tobytes())], max_rows=10)
    assert batch.matrix.dtype == np.float64
    np.testing.assert_array_equal(batch.matrix, data.astype(np.float64))


def test_wrong_shape_names_the_tensor_and_expected_versus_received(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    with pytest.raises(InvalidInput, match=r"input 'features': expected shape \[-1, 4\], got \[2, 3\]"):
        predictor.assemble([matrix(np.zeros((2, 3)))], max_rows=10)
    with pytest.raises(InvalidInput, match=r"expected shape \[-1, 4\], got \[4\]"):
        predictor.assemble([matrix(np.zeros(4))], max_rows=10)


def test_wrong_datatype_names_expected_and_received(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    data = np.array([b"a"] * 4, dtype=object).reshape(1, 4)
    with pytest.raises(InvalidInput, match="input 'features': expected datatype FP64 .* got BYTES"):
        predictor.assemble([matrix(data, "BYTES")], max_rows=10)


def test_nan_and_infinity_are_refused_with_row_and_feature_unless_allowed(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    data = np.zeros((3, 4))
    data[2, 1] = np.nan
    with pytest.raises(
        InvalidInput, match="row 2, feature 'f1' is nan; the model's signature does not allow NaN"
    ):
        predictor.assemble([matrix(data)], max_rows=10)
    data[2, 1] = -np.inf
    with pytest.raises(InvalidInput, match="feature 'f1' is -inf"):
        predictor.assemble([matrix(data)], max_rows=10)
    tolerant = Predictor("m", 1, classifier.runtime, classifier_signature(4, ["0", "1", "2"], allow_nan=True))
    data[2, 1] = np.nan
    assert np.isnan(tolerant.assemble([matrix(data)], max_rows=10).matrix[2, 1])


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_is_refused_even_where_the_signature_allows_missing_values(
    classifier: Fitted, value: float
) -> None:
    # NaN stands for a missing value, which a signature may allow; infinity is not missing,
    # and an all-inf row used to answer OK with probabilities [nan, nan].
    tolerant = Predictor("m", 1, classifier.runtime, classifier_signature(4, ["0", "1", "2"], allow_nan=True))
    data = np.full((2, 4), value)
    with pytest.raises(
        InvalidInput, match=f"row 0, feature 'f0' is {value}; infinity is not a feature value"
    ):
        tolerant.assemble([matrix(data)], max_rows=10)
    columns = [Tensor(f"f{i}", "FP64", (2,), np.array([0.0, value])) for i in range(4)]
    with pytest.raises(InvalidInput, match=f"input 'f0': row 1 is {value}; infinity is not a feature value"):
        tolerant.assemble(columns, max_rows=10)


def test_rows_beyond_the_limit_are_resource_exhausted_and_zero_rows_invalid(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    with pytest.raises(TooLarge, match="has 11 rows; this server accepts at most 10"):
        predictor.assemble([matrix(np.zeros((11, 4)))], max_rows=10)
    with pytest.raises(InvalidInput, match="has no rows"):
        predictor.assemble([matrix(np.zeros((0, 4)))], max_rows=10)


def test_one_tensor_per_feature_builds_the_same_matrix(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    X = classifier.X[:5]
    columns = [Tensor(f"f{i}", "FP64", (5,), X[:, i]) for i in range(4)]
    np.testing.assert_array_equal(predictor.assemble(columns, max_rows=10).matrix, X)


def test_per_feature_errors_name_the_inputs(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    columns = [Tensor(f"f{i}", "FP64", (5,), np.zeros(5)) for i in range(3)]
    with pytest.raises(InvalidInput, match="missing input\\(s\\) 'f3'"):
        predictor.assemble(columns, max_rows=10)
    with pytest.raises(InvalidInput, match="unknown input\\(s\\) 'age'"):
        predictor.assemble([*columns, Tensor("age", "FP64", (5,), np.zeros(5))], max_rows=10)
    with pytest.raises(InvalidInput, match="input 'f3': has 4 rows but the other inputs have 5"):
        predictor.assemble([*columns, Tensor("f3", "FP64", (4,), np.zeros(4))], max_rows=10)
    with pytest.raises(InvalidInput, match="input 'features' appears more than once"):
        predictor.assemble([matrix(np.zeros((1, 4)))] * 2, max_rows=10)
    with pytest.raises(InvalidInput, match="unexpected input\\(s\\): 'f0'"):
        predictor.assemble([matrix(np.zeros((1, 4))), Tensor("f0", "FP64", (1,), np.zeros(1))], max_rows=10)
    with pytest.raises(InvalidInput, match="the request has no inputs"):
        predictor.assemble([], max_rows=10)


def test_text_categories_arrive_as_bytes_columns_and_predict_like_the_training_matrix(
    categorical: Fitted,
) -> None:
    predictor = Predictor("m", 1, categorical.runtime, categorical.signature)
    X = categorical.X[:6]
    size = Tensor("size", "FP64", (6,), X[:, 0].astype(np.float64))
    colour = from_raw("colour", "BYTES", [6], encode_bytes_elements([str(c) for c in X[:, 1]]))
    batch = predictor.assemble([size, colour], max_rows=10)
    assert batch.matrix.dtype == object
    np.testing.assert_allclose(
        predictor.predict(batch.matrix)["probabilities"], categorical.estimator.predict_proba(X)
    )
    logged = predictor.logged_features(batch.matrix)
    np.testing.assert_array_equal(logged[:, 0], X[:, 0].astype(np.float64))
    assert np.isnan(logged[:, 1]).all()


def test_row_ids_name_the_rows_and_must_match_them(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    ids = from_raw("row_ids", "BYTES", [2], encode_bytes_elements(["e1", "e2"]))
    assert predictor.assemble([matrix(np.zeros((2, 4))), ids], max_rows=10).row_ids == ("e1", "e2")
    with pytest.raises(InvalidInput, match="has 2 ids for 3 rows"):
        predictor.assemble([matrix(np.zeros((3, 4))), ids], max_rows=10)


def test_requested_outputs_are_checked(classifier: Fitted) -> None:
    predictor = Predictor("m", 1, classifier.runtime, classifier.signature)
    assert predictor.check_outputs([]) == ["probabilities", "label"]
    assert predictor.check_outputs(["label"]) == ["label"]
    with pytest.raises(
        InvalidInput,
        match="requested output 'value' is not produced by model 'm'; it produces: probabilities, label",
    ):
        predictor.check_outputs(["value"])


def test_regressors_return_values(regressor: Fitted) -> None:
    predictor = Predictor("r", 1, regressor.runtime, regressor.signature)
    outputs = predictor.predict(predictor.assemble([matrix(regressor.X[:4])], max_rows=10).matrix)
    np.testing.assert_allclose(outputs["value"], regressor.estimator.predict(regressor.X[:4]))
    assert list(predictor.default_outputs) == ["value"]


def test_signatures_that_do_not_fit_the_estimator_are_refused(classifier: Fitted) -> None:
    with pytest.raises(SignatureError, match="differ from the model's"):
        Predictor("m", 1, classifier.runtime, classifier_signature(4, ["a", "b", "c"]))
    with pytest.raises(SignatureError, match="names 5 features but the model was fitted on 4"):
        Predictor("m", 1, classifier.runtime, classifier_signature(5, ["0", "1", "2"]))
    with pytest.raises(SignatureError, match="names no features"):
        Predictor("m", 1, classifier.runtime, model_pb2.Signature())


def test_predict_threads_skip_sklearns_finiteness_check_and_no_other_thread_does() -> None:
    with concurrent.futures.ThreadPoolExecutor(1, initializer=configure_predict_thread) as pool:
        assert pool.submit(lambda: sklearn.get_config()["assume_finite"]).result() is True
    assert sklearn.get_config()["assume_finite"] is False


def test_a_booster_with_positional_classes_answers_with_the_signatures_names() -> None:
    X, y = make_classification(n_samples=200, n_features=4, random_state=3)
    booster = xgboost.XGBClassifier(n_estimators=5).fit(X, y)
    data = flavor("xgboost").save(booster).data
    runtime = flavor("xgboost").load(StoredArtifact(data, sha256_hex(data)))
    predictor = Predictor("m", 1, runtime, classifier_signature(4, ["no", "yes"]))
    assert predictor.platform == "xgboost" and predictor.family == "Booster(binary:logistic)"
    outputs = predictor.predict(X[:20])
    np.testing.assert_allclose(outputs["probabilities"], booster.predict_proba(X[:20]), atol=1e-6)
    assert outputs["label"].tolist() == [["no", "yes"][v] for v in booster.predict(X[:20])]

    with pytest.raises(SignatureError, match="the signature names 3 classes but the model has 2"):
        Predictor("m", 1, runtime, classifier_signature(4, ["a", "b", "c"]))
    texts = classifier_signature(4, ["no", "yes"])
    texts.inputs.add(name="f1", datatype="BYTES", shape=[-1])
    with pytest.raises(
        SignatureError, match="feature 'f1' is declared BYTES, but xgboost models take numbers only"
    ):
        Predictor("m", 1, runtime, texts)
    regression = classifier_signature(4, [])
    regression.task = model_pb2.TASK_REGRESSION
    with pytest.raises(
        SignatureError,
        match="the signature's task is regression but the xgboost artifact is a classification model",
    ):
        Predictor("m", 1, runtime, regression)
    # Undeclared features of a numbers-only model take no text either.
    columns = [Tensor(f"f{i}", "FP64", (2,), X[:2, i]) for i in range(4)]
    columns[2] = from_raw("f2", "BYTES", [2], encode_bytes_elements(["a", "b"]))
    with pytest.raises(InvalidInput, match="input 'f2': expected datatype FP64, got BYTES"):
        predictor.assemble(columns, max_rows=10)
