"""Signatures of models made outside the platform: completed from what is declared, what the
artifact says and an input example, in that order; what nobody says is named by a stated
default or refused; and the artifact must answer the example before anything is uploaded."""

from __future__ import annotations

import io
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from services.common.errors import InvalidArgument
from services.common.flavors import flavor_of
from services.common.flavors.signature import InputExample, complete_signature
from services.common.proto.mlops.v1 import model_pb2
from tests.unit.common.flavors.conftest import Data

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def saved(model: object) -> tuple[str, bytes]:
    chosen = flavor_of(model)
    return chosen.name, chosen.save(model).data


def csv_of(names: list[str], rows: np.ndarray) -> InputExample:
    text = ",".join(names) + "\n" + "\n".join(",".join(map(str, row)) for row in rows)
    return InputExample.parse(text.encode(), "example.csv")


def test_a_booster_trained_on_a_frame_names_its_features_and_counts_its_classes(binary: Data) -> None:
    names = [f"col{i}" for i in range(binary.X.shape[1])]
    booster = xgboost.XGBClassifier(n_estimators=3).fit(pd.DataFrame(binary.X, columns=names), binary.y)
    report = complete_signature(*saved(booster))
    signature = report.signature
    assert list(signature.feature_names) == names
    assert (signature.task, list(signature.classes)) == (model_pb2.TASK_CLASSIFICATION, ["0", "1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in signature.inputs] == [("features", "FP64", [-1, 5])]
    assert [(t.name, list(t.shape)) for t in signature.outputs] == [
        ("probabilities", [-1, 2]),
        ("label", [-1]),
    ]
    assert [line.split(":")[0] for line in report.not_inferred] == ["class names"]
    assert "by position only" in report.not_inferred[0]


def test_declared_class_names_name_the_positions_and_must_count_them(binary: Data) -> None:
    artifact = saved(lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(binary.X, binary.y))
    named = complete_signature(*artifact, declared=model_pb2.Signature(classes=["stay", "churn"]))
    assert list(named.signature.classes) == ["stay", "churn"]
    assert not named.not_inferred[1:] and "as declared" in " ".join(named.inferred)
    with pytest.raises(InvalidArgument, match="names 3 classes, and the model has 2") as refused:
        complete_signature(*artifact, declared=model_pb2.Signature(classes=["a", "b", "c"]))
    assert refused.value.field == "signature.classes"


def test_labels_the_artifact_stores_cannot_be_renamed(binary: Data) -> None:
    labels = np.array(["no", "yes"], dtype=object)[binary.y]
    artifact = saved(LogisticRegression().fit(binary.X, labels))
    assert list(complete_signature(*artifact).signature.classes) == ["no", "yes"]
    with pytest.raises(InvalidArgument, match="differ from the model's own"):
        complete_signature(*artifact, declared=model_pb2.Signature(classes=["yes", "no"]))


def test_an_example_names_unnamed_features_and_the_model_must_answer_it(regression: Data) -> None:
    artifact = saved(LinearRegression().fit(regression.X, regression.y))
    unnamed = complete_signature(*artifact)
    assert list(unnamed.signature.feature_names) == ["f0", "f1", "f2", "f3", "f4"]
    assert unnamed.not_inferred[0].startswith("feature names: neither the artifact nor an input example")

    names = ["a", "b", "c", "d", "e"]
    report = complete_signature(*artifact, example=csv_of(names, regression.rows[:4]))
    assert list(report.signature.feature_names) == names and report.example_rows == 4
    assert not report.not_inferred
    assert [(t.name, list(t.shape)) for t in report.signature.outputs] == [("value", [-1])]

    with pytest.raises(InvalidArgument, match="it has 3 columns, and the model takes 5 features") as refused:
        complete_signature(*artifact, example=csv_of(names[:3], regression.rows[:4, :3]))
    assert refused.value.field == "input_example"


def test_an_example_with_missing_values_allows_them_and_must_still_be_answered(binary: Data) -> None:
    artifact = saved(xgboost.XGBClassifier(n_estimators=3).fit(binary.X, binary.y))
    buffer = io.BytesIO()
    np.save(buffer, binary.gappy_rows[:8])
    report = complete_signature(*artifact, example=InputExample.parse(buffer.getvalue(), "rows.npy"))
    assert report.signature.inputs[0].allow_nan and report.example_rows == 8

    # scikit-learn's logistic regression refuses missing values: so does the CLI, before uploading.
    refused_nan = saved(LogisticRegression().fit(binary.X, binary.y))
    with pytest.raises(InvalidArgument, match="the model could not answer it: ValueError"):
        complete_signature(*refused_nan, example=InputExample.parse(buffer.getvalue(), "rows.npy"))


def test_a_header_that_is_not_the_artifacts_feature_names_is_refused(binary: Data) -> None:
    names = [f"col{i}" for i in range(5)]
    booster = xgboost.XGBClassifier(n_estimators=2).fit(pd.DataFrame(binary.X, columns=names), binary.y)
    shuffled = [names[i] for i in (4, 3, 2, 1, 0)]
    reordered = complete_signature(*saved(booster), example=csv_of(shuffled, binary.rows[:2, ::-1]))
    assert list(reordered.signature.feature_names) == names, "the artifact's order, the example reordered"
    with pytest.raises(InvalidArgument, match="does not name the model's features"):
        complete_signature(*saved(booster), example=csv_of(["x", *names[1:]], binary.rows[:2]))


def test_a_graph_that_does_not_say_its_task_needs_it_declared() -> None:
    data = (FIXTURES / "torch_classifier.onnx").read_bytes()
    with pytest.raises(
        InvalidArgument, match="does not say whether the model classifies or regresses"
    ) as refused:
        complete_signature("onnx", data)
    assert refused.value.field == "task"
    report = complete_signature(
        "onnx", data, declared=model_pb2.Signature(task=model_pb2.TASK_CLASSIFICATION)
    )
    assert list(report.signature.classes) == ["0", "1"]
    assert [(t.name, list(t.shape)) for t in report.signature.outputs][0] == ("probabilities", [-1, 2])
    with pytest.raises(InvalidArgument, match="declared regression, and the artifact"):
        booster = saved(xgboost.XGBClassifier(n_estimators=2).fit(np.eye(4), [0, 1, 0, 1]))
        complete_signature(*booster, declared=model_pb2.Signature(task=model_pb2.TASK_REGRESSION))


def test_a_graph_taking_text_per_feature_gets_one_tensor_per_feature() -> None:
    frame = pd.DataFrame(
        {"age": [20.0, 35.0, 50.0, 65.0] * 10, "plan": ["basic", "gold", "basic", "gold"] * 10}
    )
    target = np.array([0, 1, 0, 1] * 10)
    prepare = ColumnTransformer([("age", "passthrough", ["age"]), ("plan", OneHotEncoder(), ["plan"])])
    pipeline = make_pipeline(prepare, LogisticRegression()).fit(frame, target)
    graph = to_onnx(
        pipeline, initial_types=[("age", FloatTensorType([None, 1])), ("plan", StringTensorType([None, 1]))]
    )
    example = InputExample.parse(b"plan,age\ngold,40\nbasic,22\n", "rows.csv")
    report = complete_signature("onnx", graph.SerializeToString(), example=example)
    assert [(t.name, t.datatype, list(t.shape)) for t in report.signature.inputs] == [
        ("age", "FP64", [-1]),
        ("plan", "BYTES", [-1]),
    ]
    assert report.example_rows == 2 and example.categorical == frozenset({"plan"})


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"a,b\n", "x.csv", "a header row and at least one row"),
        (b"a,a\n1,2\n", "x.csv", "name every column once"),
        (b"a,b\n1\n", "x.csv", "line 2 has 1 values for 2 columns"),
        (b"a,b\n1,inf\n", "x.csv", "infinite value"),
        (b"\xff\xfe", "x.csv", "not UTF-8"),
        (b"1,2\n", "x.txt", "a .csv file with a header or a .npy matrix"),
        (b"garbage", "x.npy", "not a numeric .npy matrix"),
    ],
)
def test_examples_that_are_not_rows_are_refused_naming_the_option(
    content: bytes, name: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as refused:
        InputExample.parse(content, name)
    assert refused.value.field == "input_example"


def test_an_npy_of_objects_is_a_pickle_and_is_never_loaded() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidArgument, match="not a numeric .npy matrix"):
        InputExample.parse(buffer.getvalue(), "rows.npy")


def test_bytes_the_flavor_refuses_are_refused_naming_the_artifact() -> None:
    with pytest.raises(InvalidArgument, match="artifact: .*pickle") as refused:
        complete_signature("xgboost", b"\x80\x04garbage")
    assert refused.value.field == "artifact"
    with pytest.raises(InvalidArgument, match="unknown artifact format") as unknown:
        complete_signature("tensorflow", b"...")
    assert unknown.value.field == "format"
