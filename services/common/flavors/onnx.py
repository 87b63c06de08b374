"""``onnx``: ONNX graphs run with onnxruntime (scikit-learn pipelines exported with skl2onnx,
PyTorch models exported with ``torch.onnx.export``, anything else ONNX can hold).

An ONNX file is a protobuf message: a graph of operators from published opsets and the
weights they use; loading it runs nothing of the file's own. It is verified by parsing it,
``onnx.checker`` (structure, types, shapes), refusing weights stored outside the file
(external data names paths on the loading machine), and creating an onnxruntime session
(every operator must be one onnxruntime implements).

Inputs follow the platform's convention: one matrix input (``[batch, n_features]``, fed
the feature matrix cast to the input's type), or one input per feature named after it
(``[batch]`` or ``[batch, 1]``, numbers or strings). Outputs are read from the graph:

- a classifier's probabilities: the input of a ``ZipMap`` (skl2onnx's dictionary output,
  read as the tensor it was made from), else a float output named ``*prob*``, else the
  only float output with two dimensions; its labels: an integer or string output;
- a regressor's value: its only float output, one number per row.

The version parameter :data:`OUTPUT_PARAM` names the output to use when a graph has
several. The task comes from the graph when it says (a classifier operator, a
``ZipMap``, a label output) and otherwise from the version's signature (a PyTorch model's
softmax output says nothing of being probabilities). Class labels come from the graph
(``ZipMap`` or classifier attributes) or are positions the signature names. ONNX graphs
are not explained: refused by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from services.common.artifacts import ArtifactError
from services.common.flavors.base import (
    Flavor,
    InferredSignature,
    Matrix,
    Runtime,
    SavedArtifact,
    StoredArtifact,
)
from services.common.flavors.explain import Explainer, Unexplainable
from services.common.proto.mlops.v1 import model_pb2
from services.common.values import label_text

OUTPUT_PARAM = "onnx.output"
"""Version parameter: the graph output that carries the probabilities (classifiers) or the
values (regressors), when the graph has several candidates."""

# onnxruntime's type strings -> (numpy dtype, the Open Inference Protocol's datatype).
_TYPES: dict[str, tuple[Any, str]] = {
    "tensor(float)": (np.float32, "FP32"),
    "tensor(double)": (np.float64, "FP64"),
    "tensor(int64)": (np.int64, "INT64"),
    "tensor(int32)": (np.int32, "INT32"),
    "tensor(bool)": (np.bool_, "BOOL"),
    "tensor(string)": (object, "BYTES"),
}
_FLOATS = frozenset({"tensor(float)", "tensor(double)"})
_LABELS = frozenset({"tensor(int64)", "tensor(int32)", "tensor(string)"})
_CLASSIFIER_OPS = frozenset({"LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier", "ZipMap"})


def _tensors(nodes: Iterable[Any], initializers: Iterable[Any] = ()) -> Iterator[Any]:
    """Every tensor ``nodes`` hold in their attributes, subgraphs (If/Loop/Scan bodies) included."""
    import onnx

    yield from initializers
    for node in nodes:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            yield from attribute.tensors
            for graph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from _tensors(
                    graph.node, [*graph.initializer, *(t.values for t in graph.sparse_initializer)]
                )


def held_tensors(model: Any) -> Iterator[Any]:
    """Every tensor an ONNX model holds: initializers, node attributes, function bodies and
    subgraphs included (where external data could hide)."""
    graph = model.graph
    return _tensors(
        [*graph.node, *(node for function in model.functions for node in function.node)],
        [*graph.initializer, *(t.values for t in graph.sparse_initializer)],
    )


def _refuse_external_data(model: Any) -> None:
    import onnx

    for tensor in held_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ArtifactError(
                f"the onnx graph keeps tensor {tensor.name!r} outside the file (external data): "
                "artifacts must be self-contained; save the model with its weights inside"
            )


def _attribute(node: Any, name: str) -> Any:
    import onnx

    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


class _Graph:
    """A parsed, checked graph, and what it says about classes and outputs."""

    def __init__(self, data: bytes):
        import onnx  # imported on use: the registry and CLI import this package without it

        model = onnx.load_model_from_string(data)
        if not model.graph.node:
            raise ArtifactError("not an onnx model: the graph has no operators")
        _refuse_external_data(model)
        onnx.checker.check_model(model)
        self.classifier_op = any(n.op_type in _CLASSIFIER_OPS for n in model.graph.node)
        self.classes: tuple[str, ...] = ()
        self.zipped: dict[str, str] = {}
        """ZipMap output -> the probability tensor it was made from."""
        graph_outputs = {o.name for o in model.graph.output}
        for node in model.graph.node:
            labels = _attribute(node, "classlabels_strings") or _attribute(node, "classlabels_int64s")
            if labels is not None and node.domain == "ai.onnx.ml":
                self.classes = tuple(
                    label_text(v.decode() if isinstance(v, bytes) else int(v)) for v in labels
                )
            if node.op_type == "ZipMap" and node.output[0] in graph_outputs:
                self.zipped[node.output[0]] = node.input[0]
        for source in self.zipped.values():
            # ZipMap's input is a float tensor by the operator's definition: expose it.
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(source, onnx.TensorProto.FLOAT, None)
            )
        self.model = model

    def session(self) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread per call: serving runs calls in parallel on its own executor.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(
            self.model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )


def _spec(name: str, ort_type: str, shape: Sequence[Any]) -> model_pb2.TensorSpec:
    datatype = _TYPES.get(ort_type, (None, ort_type))[1]
    return model_pb2.TensorSpec(
        name=name, datatype=datatype, shape=[d if isinstance(d, int) else -1 for d in shape]
    )


class OnnxRuntime(Runtime):
    flavor = "onnx"

    def __init__(self, graph: _Graph, signature: model_pb2.Signature, output: str = ""):
        self.session = graph.session()
        self.inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.family = f"onnx graph ({graph.model.producer_name or 'unknown producer'})"
        for tensor in self.inputs:
            if tensor.type not in _TYPES:
                raise ArtifactError(
                    f"onnx input {tensor.name!r} has type {tensor.type}, which serving cannot feed"
                )
        self.accepts_text = any(t.type == "tensor(string)" for t in self.inputs)
        self._columns = self._input_columns(signature)
        probabilities = self._probabilities(graph, outputs, output)
        labels = [n for n, o in outputs.items() if o.type in _LABELS and len(o.shape) == 1]
        if graph.classifier_op or (labels and signature.task != model_pb2.TASK_REGRESSION):
            self.task = model_pb2.TASK_CLASSIFICATION
        elif probabilities is None and self._value_output(outputs, output) is not None:
            self.task = model_pb2.TASK_REGRESSION
        task = self.task or signature.task
        if not task:
            raise ArtifactError(
                "the onnx graph does not say whether it classifies or regresses: declare the signature's task"
            )
        self._proba_output = probabilities if task == model_pb2.TASK_CLASSIFICATION else None
        self._label_output = labels[0] if labels and task == model_pb2.TASK_CLASSIFICATION else None
        self._value = self._value_output(outputs, output) if task == model_pb2.TASK_REGRESSION else None
        if task == model_pb2.TASK_REGRESSION and self._value is None:
            raise ArtifactError(
                f"no onnx output gives one float per row; outputs: {', '.join(outputs)} "
                f"(name the one to use in the version parameter '{OUTPUT_PARAM}')"
            )
        if task == model_pb2.TASK_CLASSIFICATION:
            self._init_classes(graph, outputs, signature)

    def _input_columns(self, signature: model_pb2.Signature) -> list[int]:
        if len(self.inputs) == 1:
            shape = self.inputs[0].shape
            if len(shape) != 2:
                raise ArtifactError(
                    f"onnx input {self.inputs[0].name!r} has shape {shape}; a single input must be a "
                    "[batch, n_features] matrix"
                )
            self.n_features_in_ = shape[1] if isinstance(shape[1], int) else None
            return []
        names = list(signature.feature_names) or [t.name for t in self.inputs]
        missing = [t.name for t in self.inputs if t.name not in names]
        if missing:
            raise ArtifactError(
                f"the onnx graph takes one input per feature, and the signature does not name {', '.join(missing)}"
            )
        for tensor in self.inputs:
            if len(tensor.shape) not in (1, 2) or (
                len(tensor.shape) == 2 and tensor.shape[1] not in (1, None)
            ):
                raise ArtifactError(
                    f"onnx input {tensor.name!r} has shape {tensor.shape}; a feature's is [batch, 1]"
                )
        self.n_features_in_ = len(names)
        return [names.index(t.name) for t in self.inputs]

    @staticmethod
    def _probabilities(graph: _Graph, outputs: dict[str, Any], chosen: str) -> str | None:
        if chosen:
            if chosen not in outputs:
                raise ArtifactError(
                    f"parameter '{OUTPUT_PARAM}' names {chosen!r}, which is not an output of the graph"
                )
            return graph.zipped.get(chosen, chosen)
        if graph.zipped:
            return next(iter(graph.zipped.values()))
        # Two dimensions, not one column: [batch, 1] is a value per row.
        floats = [
            n for n, o in outputs.items() if o.type in _FLOATS and len(o.shape) == 2 and o.shape[1] != 1
        ]
        named = [n for n in floats if "prob" in n.lower()]
        return (named or floats)[0] if len(named) == 1 or len(floats) == 1 else None

    @staticmethod
    def _value_output(outputs: dict[str, Any], chosen: str) -> str | None:
        if chosen:
            return chosen if chosen in outputs else None
        floats = [
            n
            for n, o in outputs.items()
            if o.type in _FLOATS and (len(o.shape) == 1 or (len(o.shape) == 2 and o.shape[1] == 1))
        ]
        return floats[0] if len(floats) == 1 else None

    def _init_classes(self, graph: _Graph, outputs: dict[str, Any], signature: model_pb2.Signature) -> None:
        shape = outputs[self._proba_output].shape if self._proba_output in outputs else []
        width = shape[-1] if shape and isinstance(shape[-1], int) else None
        if graph.classes:
            self.classes_ = np.array(graph.classes, dtype=object)
        elif width or signature.classes:
            self.classes_ = np.array([str(i) for i in range(width or len(signature.classes))], dtype=object)
            self.positional_classes = True
        if self._proba_output is None and self._label_output is None:
            raise ArtifactError(
                f"no onnx output gives class probabilities or labels; outputs: {', '.join(outputs)} "
                f"(name the one to use in the version parameter '{OUTPUT_PARAM}')"
            )

    @property
    def has_proba(self) -> bool:
        return self._proba_output is not None

    def _feed(self, matrix: Matrix) -> dict[str, Any]:
        if not self._columns:
            tensor = self.inputs[0]
            return {tensor.name: np.ascontiguousarray(matrix, dtype=_TYPES[tensor.type][0])}
        feed = {}
        for tensor, column in zip(self.inputs, self._columns, strict=True):
            values = matrix[:, column]
            if tensor.type == "tensor(string)":
                values = np.array([label_text(v) for v in values], dtype=object)
            else:
                values = values.astype(_TYPES[tensor.type][0])
            feed[tensor.name] = values if len(tensor.shape) == 1 else values.reshape(-1, 1)
        return feed

    def _run(self, output: str, matrix: Matrix) -> Matrix:
        return np.asarray(self.session.run([output], self._feed(matrix))[0])

    def predict_proba(self, matrix: Matrix) -> Matrix:
        assert self._proba_output is not None, "has_proba is checked first"
        return self._run(self._proba_output, matrix).astype(np.float64, copy=False)

    def predict(self, matrix: Matrix) -> Matrix:
        if self._value is not None:
            return self._run(self._value, matrix).astype(np.float64, copy=False).reshape(-1)
        if self._label_output is not None:
            return np.array(
                [
                    label_text(v.item() if hasattr(v, "item") else v)
                    for v in self._run(self._label_output, matrix)
                ],
                dtype=object,
            )
        assert self.classes_ is not None
        return np.asarray(self.classes_[np.argmax(self.predict_proba(matrix), axis=1)])

    def explainer(self) -> Explainer:
        raise Unexplainable(
            "onnx graphs are not explained: the platform has no exact attribution for an arbitrary graph"
        )


class OnnxFlavor(Flavor):
    name = "onnx"
    platform = "onnxruntime_onnx"
    packages = ("onnx", "onnxruntime", "numpy")
    saved_as = "an ONNX model file (onnx.save, skl2onnx.to_onnx, torch.onnx.export) with its weights inside"

    def handles(self, model: object) -> bool:
        return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")

    def save(self, model: Any, *, signing_key: bytes | None = None) -> SavedArtifact:
        return SavedArtifact(model.SerializeToString())

    def check(self, data: bytes, *, signature_hmac: str, signing_key: bytes | None) -> None:
        _Graph(data).session()

    def open(self, artifact: StoredArtifact, *, signing_key: bytes | None) -> Runtime:
        return OnnxRuntime(_Graph(artifact.data), artifact.signature, artifact.params.get(OUTPUT_PARAM, ""))

    def describe(self, data: bytes) -> InferredSignature:
        graph = _Graph(data)
        session = graph.session()
        inputs = tuple(_spec(t.name, t.type, t.shape) for t in session.get_inputs())
        outputs = tuple(_spec(t.name, t.type, t.shape) for t in session.get_outputs())
        unknown = []
        try:
            runtime = OnnxRuntime(graph, model_pb2.Signature())
            task, classes = runtime.task, runtime.classes_
        except ArtifactError as exc:
            task, classes = model_pb2.TASK_UNSPECIFIED, None
            unknown.append(f"task: {exc}")
        names = tuple(t.name for t in inputs) if len(inputs) > 1 else ()
        width = len(names) or (
            inputs[0].shape[1] if len(inputs[0].shape) == 2 and inputs[0].shape[1] > 0 else None
        )
        if not names:
            unknown.append("feature names: the graph takes one unnamed matrix")
        if classes is not None and runtime.positional_classes:
            unknown.append(f"class names: the graph knows {len(classes)} classes by position only")
        return InferredSignature(
            task=task,
            n_features=width,
            feature_names=names,
            classes=tuple(classes) if classes is not None and not runtime.positional_classes else (),
            inputs=inputs,
            outputs=outputs,
            unknown=tuple(unknown),
        )
