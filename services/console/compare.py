"""Two versions side by side: metrics, gate results with their margins, parameters, and the
data each was trained on. No I/O: it reads the registry's ``ModelVersion`` messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.clients.registry import ModelVersion, gate_margin
from services.common.proto.mlops.v1 import model_pb2
from services.common.trials import TRIALS_PREFIX


@dataclass(frozen=True)
class MetricRow:
    name: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        """``b - a`` when both have the metric."""
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float
    threshold: float
    margin: float
    """Positive by how much it passed, negative by how much it failed."""
    detail: str


@dataclass(frozen=True)
class GateRow:
    name: str
    a: Gate | None
    b: Gate | None


@dataclass(frozen=True)
class TextRow:
    name: str
    a: str
    b: str

    @property
    def differs(self) -> bool:
        return self.a != self.b


@dataclass(frozen=True)
class Comparison:
    a: ModelVersion
    b: ModelVersion
    metrics: list[MetricRow]
    gates: list[GateRow]
    params: list[TextRow]
    data: list[TextRow]
    same_data: bool
    """Both were trained on exactly the same rows (equal window content hashes)."""


def gate(result: model_pb2.GateResult) -> Gate:
    return Gate(
        result.name, result.passed, result.value, result.threshold, gate_margin(result), result.detail
    )


def when(stamp: Timestamp) -> str:
    """A protobuf timestamp as ``YYYY-MM-DD HH:MM:SS UTC``; empty when unset."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_text(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def data_rows(version: ModelVersion) -> dict[str, str]:
    """What a version was trained on, as the compare table and the version page show it."""
    lineage = version.lineage
    data = lineage.data
    return {
        "dataset": data.window.dataset or (version.spec.dataset if version.HasField("spec") else ""),
        "window start": when(data.window.start_time) or "(open)",
        "window end": when(data.window.end_time) or "(open)",
        "rows": str(data.row_count),
        "content hash": data.content_sha256,
        "schema version": str(data.schema_version or ""),
        "parent version": str(lineage.parent_version or ""),
        "trigger": lineage.trigger,
        "train request": lineage.train_request_id,
        "drift event": lineage.drift_event_id,
        "code version": lineage.code_version,
    }


def headline(metrics: Mapping[str, float]) -> list[tuple[str, float]]:
    """The holdout metrics; dotted names (``importance.f0``, ``robustness.noise_drop``) are the
    measurements behind the gates, left to the full table."""
    return sorted((k, v) for k, v in metrics.items() if "." not in k)


def plain_params(params: Mapping[str, str]) -> dict[str, str]:
    """The params without the search's trial records (shown as a table of their own)."""
    return {k: v for k, v in params.items() if not k.startswith(TRIALS_PREFIX)}


def compare(a: ModelVersion, b: ModelVersion) -> Comparison:
    """``a`` and ``b`` side by side; rows in name order, headline metrics first.

    >>> from services.common.proto.mlops.v1 import registry_pb2
    >>> one = registry_pb2.ModelVersion(version=1, metrics={"accuracy": 0.8},
    ...     gates=[model_pb2.GateResult(name="min_metric", passed=True, value=0.8, threshold=0.75)])
    >>> two = registry_pb2.ModelVersion(version=2, metrics={"accuracy": 0.9, "importance.f0": 0.3},
    ...     gates=[model_pb2.GateResult(name="min_metric", passed=False, value=0.7, threshold=0.75)])
    >>> c = compare(one, two)
    >>> [(m.name, m.delta) for m in c.metrics]  # doctest: +ELLIPSIS
    [('accuracy', 0.09999...), ('importance.f0', None)]
    >>> round(c.gates[0].a.margin, 2), round(c.gates[0].b.margin, 2)
    (0.05, -0.05)
    """
    names = sorted(set(a.metrics) | set(b.metrics), key=lambda n: ("." in n, n))
    metrics = [MetricRow(n, a.metrics.get(n), b.metrics.get(n)) for n in names]
    gates_a = {g.name: gate(g) for g in a.gates}
    gates_b = {g.name: gate(g) for g in b.gates}
    order = [g.name for g in a.gates] + [g.name for g in b.gates if g.name not in gates_a]
    gates = [GateRow(n, gates_a.get(n), gates_b.get(n)) for n in order]
    params_a, params_b = plain_params(a.params), plain_params(b.params)
    params = [
        TextRow(k, params_a.get(k, ""), params_b.get(k, "")) for k in sorted(set(params_a) | set(params_b))
    ]
    data_a, data_b = data_rows(a), data_rows(b)
    data = [TextRow(k, data_a[k], data_b[k]) for k in data_a]
    hash_a, hash_b = a.lineage.data.content_sha256, b.lineage.data.content_sha256
    return Comparison(a, b, metrics, gates, params, data, same_data=bool(hash_a) and hash_a == hash_b)
