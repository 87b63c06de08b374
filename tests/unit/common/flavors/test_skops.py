"""The skops flavor: scikit-learn models round trip, and nothing outside the trusted types loads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.common.artifacts import ArtifactError, DigestMismatch, sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.proto.mlops.v1 import model_pb2
from tests.unit.common.flavors.conftest import Data, round_trip

SKOPS = flavor("skops")


@pytest.mark.parametrize(
    "model",
    [make_pipeline(StandardScaler(), LogisticRegression()), HistGradientBoostingClassifier(max_iter=10)],
    ids=["logistic_pipeline", "hist_gradient_boosting"],
)
def test_classifiers_predict_after_the_round_trip_as_in_process(model: object, binary: Data) -> None:
    model.fit(binary.X, binary.y)  # type: ignore[attr-defined]
    _, runtime = round_trip("skops", model)
    np.testing.assert_allclose(
        runtime.predict_proba(binary.rows),
        model.predict_proba(binary.rows),  # type: ignore[attr-defined]
        atol=1e-6,
    )
    assert runtime.task == model_pb2.TASK_CLASSIFICATION and runtime.n_features_in_ == 5
    assert runtime.classes_ is not None and list(runtime.classes_) == ["0", "1"]
    assert not runtime.positional_classes and runtime.has_proba


def test_histogram_boosting_regressors_explain_their_value_exactly(regression: Data) -> None:
    model = HistGradientBoostingRegressor(max_iter=20).fit(regression.X, regression.y)
    _, runtime = round_trip("skops", model)
    explained = runtime.explainer().explain(regression.gappy_rows)
    np.testing.assert_allclose(
        explained.values.sum(axis=1) + explained.base, model.predict(regression.gappy_rows), atol=1e-6
    )
    assert runtime.task == model_pb2.TASK_REGRESSION


def test_the_signature_is_inferred_from_the_artifact(binary: Data) -> None:
    model = LogisticRegression().fit(binary.X, np.array(["no", "yes"], dtype=object)[binary.y])
    inferred = SKOPS.infer_signature(SKOPS.save(model).data)
    assert (inferred.task, inferred.n_features, inferred.classes) == (
        model_pb2.TASK_CLASSIFICATION,
        5,
        ("no", "yes"),
    )
    assert inferred.unknown == ("feature names: the estimator was fitted on an unnamed matrix",)
    proto = inferred.to_proto()
    assert [(t.name, t.datatype, list(t.shape)) for t in proto.inputs] == [("features", "FP64", [-1, 5])]
    assert [t.name for t in proto.outputs] == ["probabilities", "label"]


def test_a_changed_byte_is_refused_before_loading(binary: Data) -> None:
    data = SKOPS.save(LogisticRegression().fit(binary.X, binary.y)).data
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(DigestMismatch) as caught:
        SKOPS.load(StoredArtifact(tampered, sha256_hex(data)))
    assert caught.value.expected == sha256_hex(data)


def test_types_outside_the_trusted_list_are_refused_at_verification_and_load() -> None:
    # A skops file that would build an arbitrary object: refused even with a correct digest.
    data = sio.dumps({"payload": sio.dumps})
    for check in (lambda: SKOPS.verify(data), lambda: SKOPS.load(StoredArtifact(data, sha256_hex(data)))):
        with pytest.raises(ArtifactError, match="types outside the trusted list: skops.io._persist.dumps"):
            check()


def test_what_is_not_a_skops_file_is_refused_by_name(binary: Data) -> None:
    with pytest.raises(ArtifactError, match="not a skops artifact"):
        SKOPS.verify(b"definitely not a zip file")
    model = LogisticRegression().fit(binary.X, binary.y)
    with pytest.raises(ArtifactError, match="skops artifact refused: the bytes are a Python pickle"):
        SKOPS.verify(pickle.dumps(model))
