"""The onnx flavor: skl2onnx and torch exports run with onnxruntime as in process; graphs that
are not self-contained, that onnxruntime cannot run, or that are not ONNX are refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.common.artifacts import ArtifactError, sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.flavors.explain import Unexplainable
from services.common.proto.mlops.v1 import model_pb2
from tests.unit.common.flavors.conftest import Data, round_trip

ONNX = flavor("onnx")
FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"
IR_VERSION = 10
"""What torch and skl2onnx write; onnx's helpers default to a newer IR than onnxruntime reads."""


def classification(classes: list[str]) -> model_pb2.Signature:
    return model_pb2.Signature(
        feature_names=[f"f{i}" for i in range(4)], classes=classes, task=model_pb2.TASK_CLASSIFICATION
    )


def test_a_skl2onnx_pipeline_answers_as_scikit_learn_and_onnxruntime_do(binary: Data) -> None:
    labels = np.array(["no", "yes"], dtype=object)[binary.y]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(binary.X, labels)
    graph = to_onnx(pipeline, binary.X[:1].astype(np.float32))  # a ZipMap gives probabilities as dicts
    data, runtime = round_trip("onnx", graph)
    rows = binary.rows
    np.testing.assert_allclose(runtime.predict_proba(rows), pipeline.predict_proba(rows), atol=1e-4)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    labels_out, zipped = session.run(None, {"X": rows.astype(np.float32)})
    in_process = np.array([[row["no"], row["yes"]] for row in zipped])
    np.testing.assert_allclose(runtime.predict_proba(rows), in_process, atol=1e-6)
    assert runtime.classes_ is not None and list(runtime.classes_) == ["no", "yes"]
    assert not runtime.positional_classes and runtime.task == model_pb2.TASK_CLASSIFICATION

    inferred = ONNX.infer_signature(data)
    assert (inferred.task, inferred.n_features, inferred.classes) == (
        model_pb2.TASK_CLASSIFICATION,
        5,
        ("no", "yes"),
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in inferred.inputs] == [("X", "FP32", [-1, 5])]
    with pytest.raises(Unexplainable, match="onnx graphs are not explained"):
        runtime.explainer()


def test_integer_classes_and_regressors(multiclass: Data, regression: Data) -> None:
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(
        multiclass.X, multiclass.y
    )
    _, runtime = round_trip("onnx", to_onnx(forest, multiclass.X[:1].astype(np.float32)))
    np.testing.assert_allclose(
        runtime.predict_proba(multiclass.rows), forest.predict_proba(multiclass.rows), atol=1e-4
    )
    assert runtime.classes_ is not None and list(runtime.classes_) == ["0", "1", "2"]

    linear = LinearRegression().fit(regression.X, regression.y)
    data, runtime = round_trip("onnx", to_onnx(linear, regression.X[:1].astype(np.float32)))
    np.testing.assert_allclose(
        runtime.predict(regression.rows), linear.predict(regression.rows), rtol=1e-4, atol=1e-3
    )
    assert ONNX.infer_signature(data).task == model_pb2.TASK_REGRESSION


def test_a_torch_export_is_served_under_the_signature_that_names_its_task_and_classes() -> None:
    data = (FIXTURES / "torch_classifier.onnx").read_bytes()
    expected = json.loads((FIXTURES / "torch_classifier.expected.json").read_text())
    inferred = ONNX.infer_signature(data)
    assert inferred.task == model_pb2.TASK_UNSPECIFIED and inferred.n_features == 4
    assert [(t.name, t.datatype, list(t.shape)) for t in inferred.inputs] == [("features", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in inferred.outputs] == [
        ("probabilities", "FP32", [-1, 2])
    ]
    assert any(note.startswith("task: ") for note in inferred.unknown)

    runtime = ONNX.load(StoredArtifact(data, sha256_hex(data), classification(["no", "yes"])))
    rows = np.array(expected["rows"])
    np.testing.assert_allclose(runtime.predict_proba(rows), np.array(expected["probabilities"]), atol=1e-4)
    assert (
        runtime.positional_classes and runtime.classes_ is not None and list(runtime.classes_) == ["0", "1"]
    )
    with pytest.raises(ArtifactError, match="does not say whether it classifies or regresses"):
        ONNX.load(StoredArtifact(data, sha256_hex(data)))


def per_feature_graph() -> onnx.ModelProto:
    """``value = 2 a - 3 b + 1`` with one ``[batch, 1]`` input per feature, built with onnx's helpers."""
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1]) for name in ("a", "b")]
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("MatMul", ["ab", "w"], ["wx"]),
        helper.make_node("Add", ["wx", "bias"], ["value"]),
    ]
    weights = [
        helper.make_tensor("w", TensorProto.FLOAT, [2, 1], [2.0, -3.0]),
        helper.make_tensor("bias", TensorProto.FLOAT, [1], [1.0]),
    ]
    output = helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph(nodes, "per_feature", inputs, [output], initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def test_one_input_per_feature_is_fed_by_name_whatever_the_column_order() -> None:
    data = per_feature_graph().SerializeToString()
    signature = model_pb2.Signature(feature_names=["b", "a"], task=model_pb2.TASK_REGRESSION)
    runtime = ONNX.load(StoredArtifact(data, sha256_hex(data), signature))
    matrix = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 5.0]])  # columns b, a
    np.testing.assert_allclose(runtime.predict(matrix), 2 * matrix[:, 1] - 3 * matrix[:, 0] + 1)
    assert ONNX.infer_signature(data).feature_names == ("a", "b")
    unnamed = model_pb2.Signature(feature_names=["a", "c"], task=model_pb2.TASK_REGRESSION)
    with pytest.raises(ArtifactError, match="the signature does not name b"):
        ONNX.load(StoredArtifact(data, sha256_hex(data), unnamed))


def external(tensor: TensorProto, location: str) -> TensorProto:
    """``tensor`` with its data moved out of the file, as ``onnx.save(..., save_as_external_data=True)`` does."""
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def test_weights_outside_the_file_are_refused_before_onnxruntime_sees_them() -> None:
    model = per_feature_graph()
    external(model.graph.initializer[0], "../../etc/passwd")
    with pytest.raises(ArtifactError, match="keeps tensor 'w' outside the file"):
        ONNX.verify(model.SerializeToString())

    # The same inside a branch of an If: subgraphs are searched too.
    def branch(name: str, value: TensorProto) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, [1])
        return helper.make_graph([helper.make_node("Constant", [], [name], value=value)], name, [], [out])

    hidden = external(helper.make_tensor("hidden", TensorProto.FLOAT, [1], [1.0]), "/etc/shadow")
    choose = helper.make_node(
        "If",
        ["flag"],
        ["y"],
        then_branch=branch("y_then", hidden),
        else_branch=branch("y_else", helper.make_tensor("plain", TensorProto.FLOAT, [1], [0.0])),
    )
    graph = helper.make_graph(
        [choose],
        "branches",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    nested = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    with pytest.raises(ArtifactError, match="keeps tensor 'hidden' outside the file"):
        ONNX.verify(nested.SerializeToString())


def test_graphs_onnxruntime_cannot_run_and_what_is_not_onnx_are_refused(binary: Data) -> None:
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    custom = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        ir_version=IR_VERSION,
    )
    with pytest.raises(ArtifactError, match="not a loadable onnx artifact"):
        ONNX.verify(custom.SerializeToString())
    with pytest.raises(ArtifactError, match="onnx artifact refused: the bytes are a Python pickle"):
        ONNX.verify(pickle.dumps(LogisticRegression().fit(binary.X, binary.y)))
    with pytest.raises(ArtifactError, match="onnx"):
        ONNX.verify(b"\x08\x07garbage")
