"""Derived features at serving: computed from a request's raw fields with ingest's code.

A version whose signature declares ``derived`` features was trained on rows where ingest
computed those features (:class:`services.common.features.FeatureDeriver`). A request to
it sends the raw fields instead, as an event producer does, and :class:`Derivation`
computes the derived columns row by row through the same deriver, so the values a model
sees in serving are the values it was trained on. A request that sends a derived
feature itself is refused: a value computed by a client is the skew this prevents.

>>> import numpy as np
>>> from services.common.proto.mlops.v1.model_pb2 import DerivedFeature
>>> from services.serving.tensors import Tensor
>>> derivation = Derivation(
...     [DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"])], ["amount", "hour"]
... )
>>> derivation.raw_inputs
{'ts': 'timestamp'}
>>> ts = Tensor("ts", "BYTES", (2,), np.array([b"2026-11-26T10:30:00Z", b"2026-11-26T23:00:00+02:00"]))
>>> derivation.columns({"ts": ts}, rows=2)["hour"]
array([10., 21.])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.common.features import FUNCTIONS, DerivedFeatureError, FeatureDeriver
from services.common.proto.mlops.v1.datasets_pb2 import FieldType
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature
from services.serving.errors import InvalidInput
from services.serving.tensors import NUMERIC, Tensor

TIMESTAMP = "timestamp"
"""A raw input sent as ISO-8601 text with an offset (BYTES) or as seconds since the epoch."""
NUMBER = "number"
"""A raw input sent as numbers."""

_KINDS = {FieldType.FIELD_TYPE_TIMESTAMP: TIMESTAMP, FieldType.FIELD_TYPE_NUMBER: NUMBER}


class DerivationError(ValueError):
    """A signature's derived features that serving cannot compute (the version is refused)."""


class Derivation:
    """The derived features of one version, computed from raw request columns.

    Parameters
    ----------
    derived
        The signature's ``derived`` declarations.
    feature_names
        The signature's ``feature_names``: every derived feature must be one of them, and
        none may feed another.
    """

    def __init__(self, derived: Sequence[DerivedFeature], feature_names: Sequence[str]):
        names = [feature.name for feature in derived]
        self.names = frozenset(names)
        self.raw_inputs: dict[str, str] = {}
        """Raw inputs of the derived features that are not features themselves, with their
        kind (:data:`TIMESTAMP` or :data:`NUMBER`), in declaration order."""
        self._kinds: dict[str, str] = {}
        for index, feature in enumerate(derived):
            where = f"signature.derived[{index}]"
            if feature.name not in feature_names:
                raise DerivationError(
                    f"{where}: {feature.name!r} is not one of the signature's feature_names"
                )
            function = FUNCTIONS.get(feature.function)
            if function is None:
                raise DerivationError(f"{where}: unknown function {feature.function!r}")
            if len(feature.inputs) != len(function.input_types):
                raise DerivationError(
                    f"{where}: {feature.function} takes {len(function.input_types)} input(s), "
                    f"got {len(feature.inputs)}"
                )
            for name, kind in zip(feature.inputs, function.input_types, strict=True):
                if name in self.names:
                    raise DerivationError(f"{where}: input {name!r} is itself derived")
                self._kinds[name] = _KINDS[kind]
                if name not in feature_names:
                    self.raw_inputs[name] = _KINDS[kind]
        if len(self.names) != len(names):
            raise DerivationError("signature.derived declares a feature twice")
        try:
            self._deriver = FeatureDeriver(derived)
        except DerivedFeatureError as exc:
            raise DerivationError(f"signature.derived: {exc}") from None

    def refuse_derived(self, given: Sequence[str]) -> None:
        """:class:`InvalidInput` if a request sends a derived feature itself."""
        sent = sorted(self.names.intersection(given))
        if sent:
            raise InvalidInput(
                f"input '{sent[0]}' is a derived feature: the server computes it from the raw field(s) "
                "the signature names; send those instead",
                field=sent[0],
            )

    def columns(self, raw: Mapping[str, Tensor], rows: int) -> dict[str, np.ndarray[Any, Any]]:
        """Each derived feature's column (NaN where it is undefined, as a missing value is in
        training) from the raw input tensors, which must have ``rows`` rows."""
        values = {name: self._values(raw, name, kind, rows) for name, kind in self._kinds.items()}
        out = {name: np.empty(rows) for name in self._deriver.names}
        for row in range(rows):
            derived = self._deriver.compute({name: column[row] for name, column in values.items()})
            for name, value in derived.items():
                out[name][row] = np.nan if value is None else value
        return out

    @staticmethod
    def _values(raw: Mapping[str, Tensor], name: str, kind: str, rows: int) -> list[object]:
        """One raw input's values as ingest's deriver takes them: floats, text, None if missing."""
        tensor = raw.get(name)
        if tensor is None:
            raise InvalidInput(f"missing input '{name}' (a raw field a derived feature is computed from)")
        data = tensor.data
        if data.ndim == 2 and data.shape[1] == 1:
            data = data[:, 0]
        if data.ndim != 1:
            raise InvalidInput(f"input '{name}': expected shape [-1] or [-1, 1], got {list(tensor.shape)}")
        if data.shape[0] != rows:
            raise InvalidInput(f"input '{name}': has {data.shape[0]} rows but the other inputs have {rows}")
        if tensor.datatype == "BYTES":
            if kind != TIMESTAMP:
                raise InvalidInput(f"input '{name}': expected a numeric datatype, got BYTES")
            try:
                return [value.decode() for value in data]
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{name}': BYTES elements must be UTF-8 text") from None
        if tensor.datatype not in NUMERIC or tensor.datatype == "BOOL":
            raise InvalidInput(f"input '{name}': datatype {tensor.datatype} cannot carry a {kind}")
        # NaN is a missing value, as an absent field is to ingest.
        return [None if value != value else float(value) for value in data.astype(np.float64).tolist()]
