"""A version's signature for a model made outside the platform: what its artifact says, what
an input example says, what a person declared, and what none of them could say.

The platform's trainer writes every signature itself. A team registering its own model
(``mlops models create-version``, ``mlops models import-mlflow``, the SDK) has an
artifact, perhaps a few rows of input, and perhaps a partial signature. This module puts
them together, in that order of trust: what is declared wins, then what the artifact
says, then the input example; what nobody says is settled by a stated default (features
named ``f0``, ``f1`` ..., classes by position) or refused when no default is honest (a
graph that does not say whether it classifies). Every decision is reported, in words, so
the caller can show what it could not infer.

The result follows the platform's convention, so tritonclient and the monitor work
unchanged: one ``features`` FP64 ``[-1, n]`` matrix in ``feature_names`` order, or, where
the model takes one tensor per named feature (an ONNX graph with text inputs), one tensor
per feature; and ``probabilities``/``label`` or ``value`` out.

Before it answers, the artifact is loaded by its flavor with the completed signature (the
same safe load serving does) and, given an example, asked for its rows: a signature
serving would refuse, or a model that cannot answer the example, is refused here, before
anything is uploaded.

>>> example = InputExample.parse(b"age,plan\\n31,gold\\n,silver\\n", "rows.csv")
>>> example.feature_names, example.categorical, example.matrix.shape
(('age', 'plan'), frozenset({'plan'}), (2, 2))
>>> example.has_missing
True
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.artifacts import ArtifactError, sha256_hex
from services.common.errors import InvalidArgument
from services.common.flavors import flavor as flavor_named
from services.common.flavors.base import InferredSignature, Matrix, Runtime, StoredArtifact
from services.common.proto.mlops.v1 import model_pb2

MAX_EXAMPLE_ROWS = 10_000
MAX_EXAMPLE_BYTES = 16 * 1024 * 1024
EXAMPLE_FIELD = "input_example"
TASKS = {"classification": model_pb2.TASK_CLASSIFICATION, "regression": model_pb2.TASK_REGRESSION}


def task_named(name: str) -> model_pb2.Task.ValueType:
    """The task ``classification`` or ``regression`` names; :class:`InvalidArgument` otherwise."""
    if name not in TASKS:
        raise InvalidArgument(f"task: one of {', '.join(TASKS)}, got {name[:64]!r}", field="task")
    return TASKS[name]


def _task_name(task: model_pb2.Task.ValueType) -> str:
    return next((name for name, value in TASKS.items() if value == task), "unspecified")


@dataclass(frozen=True)
class InputExample:
    """A few rows of a model's input: a CSV file with a header, or a numpy ``.npy`` matrix.

    ``matrix`` is float64 when every column holds numbers (empty cells are NaN), object
    otherwise (text kept as text in the ``categorical`` columns). A ``.npy`` file has no
    column names.
    """

    matrix: Matrix
    feature_names: tuple[str, ...] = ()
    categorical: frozenset[str] = frozenset()

    @property
    def has_missing(self) -> bool:
        """Whether a numeric cell is missing (the model will be sent missing values)."""
        if self.matrix.dtype != object:
            return bool(np.isnan(self.matrix).any())
        numeric = [i for i, name in enumerate(self.feature_names) if name not in self.categorical]
        return bool(np.isnan(self.matrix[:, numeric].astype(np.float64)).any())

    @classmethod
    def of(cls, rows: Any) -> InputExample:
        """The example of rows in hand: a numpy matrix, or a data frame (its columns name the
        features; text columns are categories).

        >>> InputExample.of(np.zeros((2, 3))).matrix.shape
        (2, 3)
        """
        columns = getattr(rows, "columns", None)
        if columns is not None and hasattr(rows, "to_numpy"):  # a pandas data frame
            names = tuple(str(c) for c in columns)
            text = frozenset(
                str(c) for c, dtype in zip(columns, rows.dtypes, strict=True) if dtype.kind not in "biuf"
            )
            matrix = rows.to_numpy(dtype=object if text else np.float64)
            return cls._bounded(cls(matrix, names, text), "the input example")
        array = np.asarray(rows)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or not array.size:
            raise _bad(f"shape {list(array.shape)}; an input example is [rows, features]")
        if array.dtype.kind not in "biuf":
            raise _bad("a numpy example holds numbers; give a data frame for text columns")
        return cls._bounded(cls(array.astype(np.float64)), "the input example")

    @classmethod
    def parse(cls, data: bytes, filename: str) -> InputExample:
        """The example in ``data``, read by the suffix of ``filename`` (``.csv`` or ``.npy``);
        :class:`InvalidArgument` naming ``input_example`` when it is not one."""
        if len(data) > MAX_EXAMPLE_BYTES:
            raise _bad(f"{filename} is over {MAX_EXAMPLE_BYTES} bytes; a few rows are enough")
        suffix = filename.lower().rsplit(".", 1)[-1] if "." in filename else ""
        if suffix == "npy":
            return cls._npy(data, filename)
        if suffix == "csv":
            return cls._csv(data, filename)
        raise _bad(f"{filename}: an input example is a .csv file with a header or a .npy matrix")

    @classmethod
    def _npy(cls, data: bytes, filename: str) -> InputExample:
        try:
            # allow_pickle=False: an object array in a .npy file is a pickle.
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _bad(f"{filename} is not a numeric .npy matrix: {exc}") from None
        if array.dtype.kind not in "biuf":
            raise _bad(f"{filename} holds {array.dtype}; an input example holds numbers")
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or not array.size:
            raise _bad(f"{filename} has shape {list(array.shape)}; an input example is [rows, features]")
        matrix = array.astype(np.float64)
        if np.isinf(matrix).any():
            raise _bad(f"{filename} holds an infinite value")
        return cls._bounded(cls(matrix), filename)

    @classmethod
    def _csv(cls, data: bytes, filename: str) -> InputExample:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _bad(f"{filename} is not UTF-8 text") from None
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        if len(rows) < 2:
            raise _bad(f"{filename} needs a header row and at least one row of values")
        header = tuple(name.strip() for name in rows[0])
        if any(not name for name in header) or len(set(header)) != len(header):
            raise _bad(f"{filename}: the header must name every column once")
        cells: list[list[Any]] = []
        for number, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise _bad(f"{filename} line {number} has {len(row)} values for {len(header)} columns")
            cells.append([_cell(value, header[i], filename, number) for i, value in enumerate(row)])
        categorical = frozenset(
            name for i, name in enumerate(header) if any(isinstance(row[i], str) for row in cells)
        )
        matrix = np.array(cells, dtype=object if categorical else np.float64)
        return cls._bounded(cls(matrix, header, categorical), filename)

    @staticmethod
    def _bounded(example: InputExample, filename: str) -> InputExample:
        if len(example.matrix) > MAX_EXAMPLE_ROWS:
            raise _bad(f"{filename} has {len(example.matrix)} rows; at most {MAX_EXAMPLE_ROWS}")
        return example


def _cell(value: str, column: str, filename: str, line: int) -> Any:
    value = value.strip()
    if not value:
        return math.nan
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isinf(number):
        raise _bad(f"{filename} line {line}, column {column!r}: infinite value")
    return number


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(f"{EXAMPLE_FIELD}: {message}", field=EXAMPLE_FIELD)


@dataclass(frozen=True)
class SignatureReport:
    """The completed signature, and where each part of it came from."""

    signature: model_pb2.Signature
    inferred: tuple[str, ...] = ()
    """What was read from the artifact or the example (or declared), one line each."""
    not_inferred: tuple[str, ...] = ()
    """What nothing said, and the default taken for it or what to give instead."""
    example_rows: int = 0
    """Rows of the input example the loaded model answered (0 without an example)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "inferred": list(self.inferred),
            "not_inferred": list(self.not_inferred),
            "example_rows_answered": self.example_rows,
        }


@dataclass
class _Draft:
    """The signature being completed, and its report lines."""

    inferred: list[str] = field(default_factory=list)
    not_inferred: list[str] = field(default_factory=list)


def complete_signature(
    artifact_format: str,
    data: bytes,
    *,
    declared: model_pb2.Signature | None = None,
    example: InputExample | None = None,
    params: Mapping[str, str] | None = None,
) -> SignatureReport:
    """The signature of ``data`` (an artifact of ``artifact_format``), completed as the module
    docstring says. Raises :class:`InvalidArgument` naming the field to give or fix:
    ``artifact`` (the flavor refuses the bytes), ``signature.*`` (a declared part
    contradicts the artifact), ``input_example``, or ``task``."""
    declared = declared or model_pb2.Signature()
    try:
        chosen = flavor_named(artifact_format)
    except ArtifactError as exc:
        raise InvalidArgument(f"format: {exc}", field="format") from None
    try:
        inferred = chosen.infer_signature(data)
    except ArtifactError as exc:
        raise InvalidArgument(f"artifact: {exc}", field="artifact") from None
    draft = _Draft(not_inferred=list(inferred.unknown))
    names = _feature_names(inferred, declared, example, draft)
    task = _task(inferred, declared, draft)
    signature = InferredSignature(
        task=task, feature_names=names, classes=tuple(declared.classes) or inferred.classes
    ).to_proto()
    if declared.inputs:
        del signature.inputs[:]
        signature.inputs.extend(declared.inputs)
    else:
        _inputs(signature, inferred, example, draft)
    if chosen.signed:
        # A signed artifact is checked and loaded with the platform's key, which a team does
        # not hold: the signature is what the trainer declared, unchecked here.
        return SignatureReport(signature, tuple(draft.inferred), tuple(draft.not_inferred))
    artifact = StoredArtifact(data, sha256_hex(data), signature, dict(params or {}))
    try:
        runtime = chosen.load(artifact)
    except ArtifactError as exc:
        raise InvalidArgument(
            f"signature: the {chosen.name} artifact does not fit it: {exc}", field="signature"
        ) from None
    _check_runtime(runtime, signature, declared, draft)
    rows = _answer(runtime, signature, example) if example is not None else 0
    if rows:
        draft.inferred.append(f"the model answered the {rows} rows of the input example")
    return SignatureReport(signature, tuple(draft.inferred), tuple(draft.not_inferred), rows)


def _feature_names(
    inferred: InferredSignature,
    declared: model_pb2.Signature,
    example: InputExample | None,
    draft: _Draft,
) -> tuple[str, ...]:
    width = inferred.n_features or len(inferred.feature_names) or None
    if example is not None:
        columns = example.matrix.shape[1]
        if width is not None and columns != width:
            raise _bad(f"it has {columns} columns, and the model takes {width} features")
        if (
            inferred.feature_names
            and example.feature_names
            and set(example.feature_names) != set(inferred.feature_names)
        ):
            raise _bad(
                f"its header ({', '.join(example.feature_names)}) does not name the model's features "
                f"({', '.join(inferred.feature_names)})"
            )
        width = width or columns
    if declared.feature_names:
        if width is not None and len(declared.feature_names) != width:
            raise InvalidArgument(
                f"signature.feature_names: names {len(declared.feature_names)} features, and the model takes {width}",
                field="signature.feature_names",
            )
        draft.inferred.append(f"feature names: {len(declared.feature_names)}, as declared")
        return tuple(declared.feature_names)
    if inferred.feature_names:
        draft.inferred.append(f"feature names: {', '.join(inferred.feature_names)} (from the artifact)")
        return inferred.feature_names
    if example is not None and example.feature_names:
        _drop(draft, "feature names")
        draft.inferred.append(
            f"feature names: {', '.join(example.feature_names)} (from the input example's header)"
        )
        return example.feature_names
    if width is None:
        raise _bad("the artifact does not say how many features the model takes: give an input example")
    names = tuple(f"f{i}" for i in range(width))
    _drop(draft, "feature names")
    draft.not_inferred.append(
        f"feature names: neither the artifact nor an input example names the {width} features; "
        f"named f0 .. f{width - 1} (give a CSV input example with a header to name them)"
    )
    return names


def _drop(draft: _Draft, topic: str) -> None:
    """Forget the artifact's own note on ``topic``: something else settled it."""
    draft.not_inferred = [line for line in draft.not_inferred if not line.startswith(f"{topic}:")]


def _task(
    inferred: InferredSignature, declared: model_pb2.Signature, draft: _Draft
) -> model_pb2.Task.ValueType:
    if declared.task:
        if inferred.task and inferred.task != declared.task:
            raise InvalidArgument(
                f"task: declared {_task_name(declared.task)}, and the artifact is a {_task_name(inferred.task)} model",
                field="task",
            )
        _drop(draft, "task")
        draft.inferred.append(f"task: {_task_name(declared.task)}, as declared")
        return declared.task
    if inferred.task:
        draft.inferred.append(f"task: {_task_name(inferred.task)} (from the artifact)")
        return inferred.task
    raise InvalidArgument(
        "task: the artifact does not say whether the model classifies or regresses; declare it "
        "(classification or regression)",
        field="task",
    )


def _inputs(
    signature: model_pb2.Signature,
    inferred: InferredSignature,
    example: InputExample | None,
    draft: _Draft,
) -> None:
    """One tensor per feature where the model takes one per feature with text among them;
    else the ``features`` matrix (both ways are accepted by serving either way)."""
    allow_nan = example is not None and example.has_missing
    if allow_nan:
        draft.inferred.append("missing values allowed (the input example has some)")
    by_name = {t.name: t for t in inferred.inputs}
    per_feature = len(by_name) > 1 and set(by_name) == set(signature.feature_names)
    if per_feature and any(t.datatype == "BYTES" for t in by_name.values()):
        del signature.inputs[:]
        for name in signature.feature_names:
            text = by_name[name].datatype == "BYTES"
            signature.inputs.add(
                name=name, datatype="BYTES" if text else "FP64", shape=[-1], allow_nan=allow_nan and not text
            )
        draft.inferred.append("inputs: one tensor per feature, as the model takes them (from the artifact)")
        return
    for tensor in signature.inputs:
        tensor.allow_nan = allow_nan


def _check_runtime(
    runtime: Runtime, signature: model_pb2.Signature, declared: model_pb2.Signature, draft: _Draft
) -> None:
    """What serving checks when it loads the version, checked now; a classifier's classes
    taken from the artifact, or named by position when the artifact only counts them."""
    width = len(signature.feature_names)
    if runtime.n_features_in_ is not None and runtime.n_features_in_ != width:
        raise InvalidArgument(
            f"signature.feature_names: names {width} features, and the model takes {runtime.n_features_in_}",
            field="signature.feature_names",
        )
    if signature.task != model_pb2.TASK_CLASSIFICATION or runtime.classes_ is None:
        return
    fitted = [str(c) for c in runtime.classes_]
    if declared.classes:
        if runtime.positional_classes and len(declared.classes) != len(fitted):
            raise InvalidArgument(
                f"signature.classes: names {len(declared.classes)} classes, and the model has {len(fitted)}",
                field="signature.classes",
            )
        if not runtime.positional_classes and list(declared.classes) != fitted:
            raise InvalidArgument(
                f"signature.classes: {list(declared.classes)} differ from the model's own {fitted}",
                field="signature.classes",
            )
        _drop(draft, "class names")
        draft.inferred.append(f"classes: {', '.join(declared.classes)}, as declared")
        return
    _set_classes(signature, fitted, runtime.has_proba)
    if not runtime.positional_classes:
        draft.inferred.append(f"classes: {', '.join(fitted)} (from the artifact)")
        return
    _drop(draft, "class names")
    draft.not_inferred.append(
        f"class names: the model knows {len(fitted)} classes by position only; named "
        f"{', '.join(fitted)} (declare the classes, in that order, to name them)"
    )


def _set_classes(signature: model_pb2.Signature, classes: list[str], has_proba: bool) -> None:
    del signature.classes[:]
    signature.classes.extend(classes)
    del signature.outputs[:]
    if has_proba:
        signature.outputs.add(name="probabilities", datatype="FP64", shape=[-1, len(classes)])
    signature.outputs.add(name="label", datatype="BYTES", shape=[-1])


def _answer(runtime: Runtime, signature: model_pb2.Signature, example: InputExample) -> int:
    """Ask the model for the example's rows, columns in the signature's order."""
    matrix = example.matrix
    if example.feature_names and set(example.feature_names) == set(signature.feature_names):
        order = [example.feature_names.index(name) for name in signature.feature_names]
        matrix = matrix[:, order]
    if example.categorical and not runtime.accepts_text:
        raise _bad(
            f"column(s) {', '.join(sorted(example.categorical))} hold text, and {runtime.flavor} models take numbers only"
        )
    try:
        if runtime.has_proba:
            runtime.predict_proba(matrix)
        runtime.predict(matrix)
    except Exception as exc:  # whatever the library raises: the model cannot answer these rows
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise _bad(f"the model could not answer it: {type(exc).__name__}: {detail}") from None
    return len(matrix)
