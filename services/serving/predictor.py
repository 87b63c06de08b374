"""One model version as served: its signature decides what it accepts and returns.

A :class:`Predictor` turns decoded input tensors into the feature matrix the model was
trained on (checking names, datatypes, shapes and non-finite values against the
signature), and the answers of the version's runtime (whatever its flavor) into output
tensors. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn

from services.common.flavors import flavor
from services.common.flavors.base import Runtime
from services.common.flavors.explain import Explainer, Unexplainable
from services.common.proto.mlops.v1 import model_pb2
from services.common.values import label_text
from services.serving.derivation import TIMESTAMP, Derivation, DerivationError
from services.serving.errors import InvalidInput, TooLarge
from services.serving.tensors import FLOATS, NUMERIC, Tensor

MATRIX_DATATYPES = frozenset({"FP32", "FP64", "INT32", "INT64"})
ROW_IDS_INPUT = "row_ids"
"""Optional BYTES input naming each row, so each logged row can be joined with its label."""

Outputs = dict[str, np.ndarray[Any, Any]]

CONTRIBUTIONS = "contributions"
"""Output tensor: FP64 ``[rows, n_features]``, in ``feature_names`` order (see
:mod:`services.common.flavors.explain` for what the numbers are)."""
CONTRIBUTIONS_BASE = "contributions_base"
"""Output tensor: FP64 ``[rows]``, the base value each row's contributions add to."""
EXPLANATION_OUTPUTS = (CONTRIBUTIONS, CONTRIBUTIONS_BASE)


def configure_predict_thread() -> None:
    """Settings for a thread that runs predict calls (pass as the executor's initializer).

    scikit-learn checks every input for NaN and infinity; serving has already checked them
    against the signature (refused, or allowed because the model handles them), so the
    check is skipped. scikit-learn's configuration is per thread: this touches no other.
    """
    sklearn.set_config(assume_finite=True)


def _first_refused(values: np.ndarray[Any, Any], allow_nan: bool) -> tuple[int, ...] | None:
    """Where the first value the signature refuses is, if any. NaN means missing, which a
    signature may allow (the model handles it); infinity is never a feature value: a model
    answers it with NaN probabilities or a silent extreme, so it is refused either way.

    >>> _first_refused(np.array([[0.0, np.nan], [np.inf, 1.0]]), allow_nan=True)
    (1, 0)
    >>> _first_refused(np.array([0.0, np.nan]), allow_nan=False)
    (1,)
    >>> _first_refused(np.array([0.0, np.nan]), allow_nan=True) is None
    True
    """
    refused = np.isinf(values) if allow_nan else ~np.isfinite(values)
    if not refused.any():
        return None
    return tuple(int(i) for i in np.argwhere(refused)[0])


def _why_refused(allow_nan: bool) -> str:
    if allow_nan:
        return "infinity is not a feature value (NaN stands for a missing one)"
    return "the model's signature does not allow NaN or infinity"


class SignatureError(ValueError):
    """A version whose signature cannot be served (it is refused at load)."""


@dataclass(frozen=True)
class TensorMeta:
    """A tensor as the model's metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    allow_nan: bool = False
    text_ok: bool = False


@dataclass(frozen=True)
class FeatureBatch:
    """Rows ready for the estimator, with what the prediction log needs of them."""

    matrix: np.ndarray[Any, Any]
    row_ids: tuple[str, ...] | None = None

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])


class Predictor:
    """A loaded model under its signature.

    Parameters
    ----------
    name, version
        The registry's model name and version number.
    runtime
        The version's artifact as its flavor loaded it.
    signature
        The version's signature from the registry; it is checked against the runtime.
    family
        The estimator family as the registry records it (``logistic_regression``); the
        runtime's own description when empty. Error messages name it.
    """

    def __init__(
        self,
        name: str,
        version: int,
        runtime: Runtime,
        signature: model_pb2.Signature,
        *,
        family: str = "",
    ):
        self.name = name
        self.version = version
        self.runtime = runtime
        self.platform = flavor(runtime.flavor).platform
        """What runs the model, as ``ModelMetadata`` reports it: the flavor's."""
        self.family = family or runtime.family
        self.feature_names: tuple[str, ...] = tuple(signature.feature_names)
        if not self.feature_names:
            raise SignatureError("the version's signature names no features")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise SignatureError("the version's signature names a feature twice")
        if signature.task and runtime.task and signature.task != runtime.task:
            raise SignatureError(
                f"the signature's task is {_task(signature.task)} but the {runtime.flavor} artifact is a "
                f"{_task(runtime.task)} model"
            )
        self.task = signature.task or runtime.task or model_pb2.TASK_REGRESSION
        self._columns = {name: i for i, name in enumerate(self.feature_names)}
        fitted_width = runtime.n_features_in_
        if fitted_width is not None and fitted_width != len(self.feature_names):
            raise SignatureError(
                f"the signature names {len(self.feature_names)} features but the model was fitted on "
                f"{fitted_width}"
            )
        try:
            self.derivation = Derivation(signature.derived, self.feature_names) if signature.derived else None
        except DerivationError as exc:
            raise SignatureError(str(exc)) from None
        self.feature_inputs = self._feature_inputs(signature)
        self.categorical = any(t.datatype == "BYTES" for t in self.feature_inputs.values())
        # A matrix would carry the derived features computed by the client: only raw columns then.
        self.matrix_input = (
            None if self.categorical or self.derivation is not None else self._matrix_input(signature)
        )
        self.classes: tuple[str, ...] = ()
        self._has_proba = False
        if self.task == model_pb2.TASK_CLASSIFICATION:
            self._init_classes(signature)
        self.default_outputs = self._outputs()
        self.explainer: Explainer | None = None
        try:
            self.explainer = runtime.explainer()
            self.cannot_explain = ""
        except Unexplainable as exc:
            self.cannot_explain = f"model family '{self.family}' does not support contributions: {exc}"
        except Exception as exc:  # never let explanations stop a version that predicts from serving
            self.cannot_explain = (
                f"model family '{self.family}' does not support contributions: {type(exc).__name__}: {exc}"
            )
        self.outputs = dict(self.default_outputs)
        """Everything this version can return (what metadata lists); requests get
        ``default_outputs`` unless they ask for more."""
        if self.explainer is not None:
            width = len(self.feature_names)
            self.outputs[CONTRIBUTIONS] = TensorMeta(CONTRIBUTIONS, "FP64", (-1, width))
            self.outputs[CONTRIBUTIONS_BASE] = TensorMeta(CONTRIBUTIONS_BASE, "FP64", (-1,))
        self._class_array = np.array(self.classes, dtype=object)

    # -- signature ---------------------------------------------------------------------------

    def _feature_inputs(self, signature: model_pb2.Signature) -> dict[str, TensorMeta]:
        declared = {t.name: t for t in signature.inputs if t.name in self._columns}
        matrix = next((t for t in signature.inputs if len(t.shape) == 2), None)
        default_nan = bool(matrix.allow_nan) if matrix is not None else False
        inputs = {}
        for feature in self.feature_names:
            spec = declared.get(feature)
            if spec is None:
                # Undeclared: numbers, or text for a category where the model takes text.
                inputs[feature] = TensorMeta(
                    feature, "FP64", (-1,), default_nan, text_ok=self.runtime.accepts_text
                )
                continue
            if spec.datatype not in NUMERIC | {"BYTES"}:
                raise SignatureError(f"feature '{feature}' has unsupported datatype {spec.datatype!r}")
            if spec.datatype == "BYTES" and not self.runtime.accepts_text:
                raise SignatureError(
                    f"feature '{feature}' is declared BYTES, but {self.runtime.flavor} models take numbers only"
                )
            inputs[feature] = TensorMeta(
                feature, spec.datatype, (-1,), spec.allow_nan, text_ok=spec.datatype == "BYTES"
            )
        return inputs

    def _matrix_input(self, signature: model_pb2.Signature) -> TensorMeta:
        spec = next((t for t in signature.inputs if len(t.shape) == 2), None)
        width = len(self.feature_names)
        if spec is None:
            return TensorMeta("features", "FP64", (-1, width))
        if spec.shape[1] != width:
            raise SignatureError(
                f"input '{spec.name}' is {list(spec.shape)} but the signature names {width} features"
            )
        if spec.datatype not in MATRIX_DATATYPES:
            raise SignatureError(f"input '{spec.name}' has unsupported datatype {spec.datatype!r}")
        return TensorMeta(spec.name, spec.datatype, (-1, width), spec.allow_nan)

    def _init_classes(self, signature: model_pb2.Signature) -> None:
        fitted = [] if self.runtime.classes_ is None else [str(c) for c in self.runtime.classes_]
        declared = list(signature.classes)
        if self.runtime.positional_classes and declared and fitted and len(declared) != len(fitted):
            raise SignatureError(
                f"the signature names {len(declared)} classes but the model has {len(fitted)}"
            )
        if not self.runtime.positional_classes and declared and fitted and declared != fitted:
            raise SignatureError(f"signature classes {declared} differ from the model's {fitted}")
        self.classes = tuple(declared or fitted)
        if not self.classes:
            raise SignatureError("a classifier's signature must name its classes")
        self._has_proba = self.runtime.has_proba

    def _outputs(self) -> dict[str, TensorMeta]:
        if self.task == model_pb2.TASK_REGRESSION:
            return {"value": TensorMeta("value", "FP64", (-1,))}
        outputs = {}
        if self._has_proba:
            outputs["probabilities"] = TensorMeta("probabilities", "FP64", (-1, len(self.classes)))
        outputs["label"] = TensorMeta("label", "BYTES", (-1,))
        return outputs

    @property
    def inputs(self) -> list[TensorMeta]:
        """The inputs as metadata lists them: the matrix when there is one, else one per raw
        field (a feature, or the input of a derived feature: a timestamp as BYTES text)."""
        return [self.matrix_input] if self.matrix_input is not None else self.column_inputs

    @property
    def column_inputs(self) -> list[TensorMeta]:
        """One 1-D input per raw field: the features a request sends, then the raw inputs of
        the derived ones."""
        if self.derivation is None:
            return list(self.feature_inputs.values())
        derived = self.derivation
        return [t for name, t in self.feature_inputs.items() if name not in derived.names] + [
            TensorMeta(name, "BYTES" if kind == TIMESTAMP else "FP64", (-1,), allow_nan=True, text_ok=True)
            for name, kind in derived.raw_inputs.items()
        ]

    # -- requests ----------------------------------------------------------------------------

    def assemble(self, tensors: Sequence[Tensor], max_rows: int) -> FeatureBatch:
        """The feature matrix for ``tensors``, or :class:`InvalidInput` naming what is wrong."""
        by_name: dict[str, Tensor] = {}
        for tensor in tensors:
            if tensor.name in by_name:
                raise InvalidInput(f"input '{tensor.name}' appears more than once")
            by_name[tensor.name] = tensor
        row_ids = by_name.pop(ROW_IDS_INPUT, None) if ROW_IDS_INPUT not in self._columns else None
        if not by_name:
            raise InvalidInput(f"the request has no inputs; {self._expected_inputs()}")
        if self.matrix_input is not None and self.matrix_input.name in by_name:
            if len(by_name) > 1:
                others = sorted(set(by_name) - {self.matrix_input.name})
                raise InvalidInput(
                    f"input '{self.matrix_input.name}' carries every feature; unexpected input(s): "
                    + ", ".join(f"'{n}'" for n in others)
                )
            matrix = self._from_matrix(by_name[self.matrix_input.name], max_rows)
        else:
            matrix = self._from_columns(by_name, max_rows)
        ids = self._row_ids(row_ids, matrix.shape[0]) if row_ids is not None else None
        return FeatureBatch(matrix, ids)

    def _expected_inputs(self) -> str:
        names = [t.name for t in self.column_inputs]
        columns = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        if self.matrix_input is None:
            return f"model '{self.name}' takes one 1-D tensor per feature: {columns}"
        return (
            f"model '{self.name}' takes '{self.matrix_input.name}' {list(self.matrix_input.shape)} "
            f"or one 1-D tensor per feature: {columns}"
        )

    def _check_rows(self, name: str, rows: int, max_rows: int) -> None:
        if rows == 0:
            raise InvalidInput(f"input '{name}' has no rows")
        if rows > max_rows:
            raise TooLarge(
                f"input '{name}' has {rows} rows; this server accepts at most {max_rows} per request"
            )

    def _from_matrix(self, tensor: Tensor, max_rows: int) -> np.ndarray[Any, Any]:
        spec = self.matrix_input
        assert spec is not None
        if tensor.datatype not in MATRIX_DATATYPES:
            raise InvalidInput(
                f"input '{tensor.name}': expected datatype {spec.datatype} "
                f"(or one of {', '.join(sorted(MATRIX_DATATYPES))}), got {tensor.datatype}"
            )
        width = len(self.feature_names)
        if len(tensor.shape) != 2 or tensor.shape[1] != width:
            raise InvalidInput(
                f"input '{tensor.name}': expected shape [-1, {width}], got {list(tensor.shape)}"
            )
        self._check_rows(tensor.name, tensor.shape[0], max_rows)
        matrix = tensor.data.astype(np.float64, copy=False)
        if tensor.datatype in FLOATS:
            refused = _first_refused(matrix, spec.allow_nan)
            if refused is not None:
                row, column = refused
                raise InvalidInput(
                    f"input '{tensor.name}': row {row}, feature '{self.feature_names[column]}' is "
                    f"{matrix[row, column]}; {_why_refused(spec.allow_nan)}"
                )
        return matrix

    def _from_columns(self, by_name: Mapping[str, Tensor], max_rows: int) -> np.ndarray[Any, Any]:
        derivation = self.derivation
        if derivation is not None:
            derivation.refuse_derived(list(by_name))
        expected = [t.name for t in self.column_inputs]
        unknown = sorted(set(by_name) - set(expected))
        if unknown:
            raise InvalidInput(
                f"unknown input(s) {', '.join(repr(n) for n in unknown)}; {self._expected_inputs()}"
            )
        missing = [f for f in expected if f not in by_name]
        if missing:
            raise InvalidInput(
                f"missing input(s) {', '.join(repr(n) for n in missing[:8])}"
                + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
                + f"; {self._expected_inputs()}"
            )
        rows = -1
        columns = []
        derived: dict[str, np.ndarray[Any, Any]] = {}
        for feature in self.feature_names:
            if derivation is not None and feature in derivation.names:
                if not derived:
                    rows = rows if rows >= 0 else self._raw_rows(by_name, max_rows)
                    derived = derivation.columns(by_name, rows)
                columns.append(self._column(feature, self.feature_inputs[feature], "FP64", derived[feature]))
                continue
            tensor = by_name[feature]
            spec = self.feature_inputs[feature]
            if len(tensor.shape) == 2 and tensor.shape[1] == 1:
                data = tensor.data[:, 0]
            elif len(tensor.shape) == 1:
                data = tensor.data
            else:
                raise InvalidInput(
                    f"input '{feature}': expected shape [-1] or [-1, 1], got {list(tensor.shape)}"
                )
            if rows < 0:
                rows = data.shape[0]
                self._check_rows(feature, rows, max_rows)
            elif data.shape[0] != rows:
                raise InvalidInput(
                    f"input '{feature}': has {data.shape[0]} rows but the other inputs have {rows}"
                )
            columns.append(self._column(feature, spec, tensor.datatype, data))
        if all(column.dtype != object for column in columns):
            return np.column_stack(columns).astype(np.float64, copy=False)
        # Text categories: the object matrix the trainer fits on (numbers as floats, text as str).
        matrix = np.empty((rows, len(columns)), dtype=object)
        for i, column in enumerate(columns):
            matrix[:, i] = column
        return matrix

    def _raw_rows(self, by_name: Mapping[str, Tensor], max_rows: int) -> int:
        """The rows of the first raw input (the other inputs are checked against it)."""
        name, tensor = next(iter(by_name.items()))
        self._check_rows(name, tensor.shape[0], max_rows)
        return tensor.shape[0]

    def _column(self, feature: str, spec: TensorMeta, datatype: str, data: np.ndarray[Any, Any]) -> Any:
        if datatype == "BYTES":
            if not spec.text_ok:
                raise InvalidInput(f"input '{feature}': expected datatype {spec.datatype}, got BYTES")
            try:
                return np.array([v.decode() for v in data], dtype=object)
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{feature}': BYTES elements must be UTF-8 text") from None
        if spec.datatype == "BYTES":
            raise InvalidInput(f"input '{feature}': expected datatype BYTES, got {datatype}")
        if datatype not in NUMERIC:
            raise InvalidInput(
                f"input '{feature}': expected datatype {spec.datatype} (or another numeric type), got {datatype}"
            )
        column = data.astype(np.float64, copy=False)
        if datatype in FLOATS:
            refused = _first_refused(column, spec.allow_nan)
            if refused is not None:
                (row,) = refused
                raise InvalidInput(
                    f"input '{feature}': row {row} is {column[row]}; {_why_refused(spec.allow_nan)}"
                )
        return column

    @staticmethod
    def _row_ids(tensor: Tensor, rows: int) -> tuple[str, ...]:
        if tensor.datatype != "BYTES" or tensor.data.ndim != 1:
            raise InvalidInput(
                f"input '{ROW_IDS_INPUT}': expected a 1-D BYTES tensor, got {tensor.datatype} "
                f"{list(tensor.shape)}"
            )
        if tensor.data.shape[0] != rows:
            raise InvalidInput(f"input '{ROW_IDS_INPUT}': has {tensor.data.shape[0]} ids for {rows} rows")
        try:
            return tuple(v.decode() for v in tensor.data)
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{ROW_IDS_INPUT}': ids must be UTF-8 text") from None

    def check_outputs(self, requested: Sequence[str], explain: bool = False) -> list[str]:
        """The output names to return: the default ones when none are requested, plus the
        contributions when ``explain``; an unknown name is an error, and so is asking a
        version that cannot explain for contributions."""
        if not requested and not explain:
            return list(self.default_outputs)
        selected = list(dict.fromkeys(requested or self.default_outputs))
        if explain:
            selected += [name for name in EXPLANATION_OUTPUTS if name not in selected]
        for name in selected:
            if name not in self.outputs:
                if name in EXPLANATION_OUTPUTS:
                    raise InvalidInput(self.cannot_explain)
                raise InvalidInput(
                    f"requested output '{name}' is not produced by model '{self.name}'; "
                    f"it produces: {', '.join(self.outputs)}"
                )
        return selected

    # -- prediction --------------------------------------------------------------------------

    def predict(self, matrix: np.ndarray[Any, Any]) -> Outputs:
        """Every output for ``matrix``: runs the model (call it off the event loop)."""
        if self.task == model_pb2.TASK_REGRESSION:
            return {"value": np.asarray(self.runtime.predict(matrix), dtype=np.float64).reshape(-1)}
        if self._has_proba:
            probabilities = np.asarray(self.runtime.predict_proba(matrix), dtype=np.float64)
            labels = self._class_array[np.argmax(probabilities, axis=1)]
            return {"probabilities": probabilities, "label": labels}
        raw = self.runtime.predict(matrix)
        if self.runtime.positional_classes:
            # Positions ("0", "1" ...) stand for the classes the signature names.
            return {"label": self._class_array[np.asarray(raw).astype(np.intp)]}
        return {
            "label": np.array([label_text(v.item() if hasattr(v, "item") else v) for v in raw], dtype=object)
        }

    def contributions(self, matrix: np.ndarray[Any, Any]) -> Outputs:
        """The explanation outputs for ``matrix`` (call it off the event loop; see
        :mod:`services.common.flavors.explain` for what the numbers are)."""
        assert self.explainer is not None, "check_outputs refuses contributions of this version"
        explained = self.explainer.explain(matrix)
        return {CONTRIBUTIONS: explained.values, CONTRIBUTIONS_BASE: explained.base}

    def warm_matrix(self, rows: int) -> np.ndarray[Any, Any]:
        """A dummy batch of ``rows`` (zeros, empty categories) to warm a version before it serves."""
        if not self.categorical:
            return np.zeros((rows, len(self.feature_names)))
        matrix = np.zeros((rows, len(self.feature_names)), dtype=object)
        for i, feature in enumerate(self.feature_names):
            if self.feature_inputs[feature].datatype == "BYTES":
                matrix[:, i] = ""
        return matrix

    def logged_features(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The rows as the prediction log carries them: numbers, NaN where a feature is text."""
        if matrix.dtype != object:
            return matrix
        logged = np.full(matrix.shape, np.nan)
        for i in range(matrix.shape[1]):
            column = matrix[:, i]
            numeric = np.fromiter((isinstance(v, float | int) for v in column), dtype=bool, count=len(column))
            logged[numeric, i] = column[numeric].astype(np.float64)
        return logged


def _task(task: model_pb2.Task.ValueType) -> str:
    return model_pb2.Task.Name(task).removeprefix("TASK_").lower()
