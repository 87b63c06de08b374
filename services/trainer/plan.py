"""A model spec checked against its dataset's schema and turned into a training plan.

Everything a spec can get wrong is found here, before a single row is read: unknown or
unusable features, a target that is not the dataset's label, a family that cannot do
the task, parameters the estimator does not have, thresholds that make no sense. Each
error names the spec field at fault.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldType
from services.common.proto.mlops.v1.model_pb2 import DataWindow, DerivedFeature, Gates, ModelSpec, Task
from services.trainer.errors import SpecError
from services.trainer.pipelines import (
    DEFAULT_FAMILIES,
    FAMILIES,
    Distribution,
    Family,
    parse_params,
    parse_search_space,
    resolve_family,
)
from services.trainer.scoring import DEFAULT_METRIC, METRICS, Metric
from services.trainer.tabular import Feature, FeatureKind

DEFAULT_HOLDOUT_FRACTION = 0.2
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

_KIND_OF_FIELD = {
    FieldType.FIELD_TYPE_NUMBER: FeatureKind.NUMERIC,
    FieldType.FIELD_TYPE_BOOLEAN: FeatureKind.NUMERIC,
    FieldType.FIELD_TYPE_CATEGORY: FeatureKind.CATEGORICAL,
}


@dataclass(frozen=True)
class Candidate:
    """One family to try: its fixed parameters and what to search around them."""

    family: Family
    params: Mapping[str, Any]
    space: Mapping[str, Distribution]


@dataclass(frozen=True)
class Limits:
    """What the operator allows, whatever a spec asks for (from the trainer's settings)."""

    default_time_budget_seconds: float = 120.0
    max_time_budget_seconds: float = 240.0
    min_holdout_rows: int = 20
    min_train_rows: int = 20


@dataclass(frozen=True)
class TrainingPlan:
    model_name: str
    dataset: str
    schema_version: int
    features: tuple[Feature, ...]
    target: str
    task: Task.ValueType
    candidates: tuple[Candidate, ...]
    metric: Metric
    time_budget_seconds: float
    gates: Gates
    seed: int
    holdout_fraction: float
    limits: Limits = field(default_factory=Limits)
    # Every feature the dataset offers (to score a production model trained on other ones).
    available_features: Mapping[str, Feature] = field(default_factory=dict)
    # How the chosen derived features are computed: the signature carries them, so serving
    # computes them from raw request fields with ingest's code.
    derived: tuple[DerivedFeature, ...] = ()

    @property
    def searches(self) -> bool:
        """Whether there is more than one configuration to choose from."""
        return len(self.candidates) > 1 or any(c.space for c in self.candidates)


def schema_features(schema: DatasetSchema) -> dict[str, Feature]:
    """Every field a model may use as a feature, by name, derived features included.

    Identifiers, the label, timestamps and free text are not features; private fields
    are pseudonymised identifiers and are only used when a spec names them.
    """
    usable: dict[str, Feature] = {}
    for spec in schema.fields:
        kind = _KIND_OF_FIELD.get(spec.type)
        if kind is not None:
            usable[spec.name] = Feature(spec.name, kind)
    for derived in schema.derived:
        usable[derived.name] = Feature(derived.name, FeatureKind.NUMERIC)
    return usable


def _default_features(schema: DatasetSchema, usable: Mapping[str, Feature]) -> list[Feature]:
    reserved = {schema.label_field, schema.event_id_field, schema.entity_id_field, schema.timestamp_field}
    private = {f.name for f in schema.fields if f.private}
    return [f for name, f in usable.items() if name not in reserved | private]


def _features(spec: ModelSpec, schema: DatasetSchema) -> tuple[Feature, ...]:
    usable = schema_features(schema)
    if not spec.features:
        chosen = _default_features(schema, usable)
        if not chosen:
            raise SpecError(f"dataset {schema.name!r} has no usable feature fields", field="features")
        return tuple(chosen)
    types = {f.name: f.type for f in schema.fields}
    seen: set[str] = set()
    chosen = []
    for i, name in enumerate(spec.features):
        where = f"features[{i}]"
        if name in seen:
            raise SpecError(f"feature {name!r} is listed twice", field=where)
        seen.add(name)
        if name == schema.label_field:
            raise SpecError(f"{name!r} is the label; it cannot also be a feature", field=where)
        if name in usable:
            chosen.append(usable[name])
        elif name in types:
            raise SpecError(
                f"field {name!r} is {FieldType.Name(types[name])}, which cannot be a model feature",
                field=where,
            )
        else:
            known = ", ".join(sorted(usable)) or "none"
            raise SpecError(
                f"unknown field {name!r} in dataset {schema.name!r} v{schema.version}; usable: {known}",
                field=where,
            )
    return tuple(chosen)


def _candidates(
    spec: ModelSpec, task: Task.ValueType, features: tuple[Feature, ...]
) -> tuple[Candidate, ...]:
    if not spec.estimators:
        return tuple(
            Candidate(FAMILIES[name], {}, FAMILIES[name].default_space) for name in DEFAULT_FAMILIES[task]
        )
    categorical = [f.name for f in features if f.kind is FeatureKind.CATEGORICAL]
    candidates = []
    for i, estimator in enumerate(spec.estimators):
        family = resolve_family(estimator.family, task, f"estimators[{i}].family")
        if family.numeric_only and categorical:
            raise SpecError(
                f"family {family.name!r} takes numeric features only (its artifact is the booster, with "
                f"nothing in front of it to encode categories), and {', '.join(categorical)} "
                f"{'is' if len(categorical) == 1 else 'are'} categorical: leave them out of features, "
                "or use hist_gradient_boosting",
                field=f"estimators[{i}].family",
            )
        params = parse_params(estimator.params_json, family, task, f"estimators[{i}].params_json")
        space = parse_search_space(
            estimator.search_space_json, family, task, f"estimators[{i}].search_space_json"
        )
        overlap = sorted(set(params) & set(space))
        if overlap:
            raise SpecError(
                f"{', '.join(overlap)} both fixed and searched; keep one",
                field=f"estimators[{i}].search_space_json",
            )
        candidates.append(Candidate(family, params, space))
    return tuple(candidates)


def _metric(spec: ModelSpec, task: Task.ValueType) -> Metric:
    name = spec.metric or DEFAULT_METRIC[task]
    metric = METRICS.get(name)
    if metric is None:
        raise SpecError(f"unknown metric {name!r}; known: {', '.join(METRICS)}", field="metric")
    if metric.task != task:
        fitting = ", ".join(m.name for m in METRICS.values() if m.task == task)
        raise SpecError(
            f"metric {name!r} does not apply to {Task.Name(task)}; use one of {fitting}", field="metric"
        )
    return metric


def _check_gates(gates: Gates, metric: Metric) -> None:
    for name in (
        "min_metric",
        "max_regression",
        "min_improvement",
        "max_noise_drop",
        "max_missing_drop",
        "max_slice_gap",
    ):
        value = getattr(gates, name)
        if not math.isfinite(value):
            raise SpecError(f"must be a finite number, got {value}", field=f"gates.{name}")
        if name != "min_metric" and value < 0:
            raise SpecError(f"must not be negative, got {value}", field=f"gates.{name}")
    if metric.name in ("accuracy", "balanced_accuracy", "f1", "roc_auc") and gates.min_metric > 1:
        raise SpecError(
            f"{metric.name} never exceeds 1, so min_metric {gates.min_metric} cannot pass",
            field="gates.min_metric",
        )


def _budget(spec: ModelSpec, limits: Limits) -> float:
    budget = spec.time_budget_seconds
    if not math.isfinite(budget) or budget < 0:
        raise SpecError(f"must be a positive number of seconds, got {budget}", field="time_budget_seconds")
    if budget == 0:
        return limits.default_time_budget_seconds
    if budget > limits.max_time_budget_seconds:
        raise SpecError(
            f"{budget:g}s exceeds this trainer's limit of {limits.max_time_budget_seconds:g}s",
            field="time_budget_seconds",
        )
    return budget


def _holdout_fraction(spec: ModelSpec) -> float:
    fraction = spec.holdout_fraction or DEFAULT_HOLDOUT_FRACTION
    if not (math.isfinite(fraction) and 0 < fraction <= 0.5):
        raise SpecError(f"must be above 0 and at most 0.5, got {fraction}", field="holdout_fraction")
    return fraction


def make_plan(spec: ModelSpec, schema: DatasetSchema, limits: Limits | None = None) -> TrainingPlan:
    """Check ``spec`` against ``schema`` and resolve its defaults into a plan."""
    limits = limits or Limits()
    if not re.fullmatch(MODEL_NAME_PATTERN, spec.model_name):
        raise SpecError(f"model name {spec.model_name!r} must match {MODEL_NAME_PATTERN}", field="model_name")
    if spec.task not in (Task.TASK_CLASSIFICATION, Task.TASK_REGRESSION):
        raise SpecError("set task to TASK_CLASSIFICATION or TASK_REGRESSION", field="task")
    if spec.dataset != schema.name:
        raise SpecError(
            f"spec names dataset {spec.dataset!r} but the schema is {schema.name!r}", field="dataset"
        )
    target = spec.target or schema.label_field
    if not schema.label_field:
        raise SpecError(f"dataset {schema.name!r} declares no label field to train on", field="target")
    if target != schema.label_field:
        raise SpecError(
            f"target {target!r} is not the label field {schema.label_field!r} of dataset {schema.name!r}",
            field="target",
        )
    if spec.seed < 0 or spec.seed >= 2**32:
        raise SpecError(f"must be in [0, 2**32), got {spec.seed}", field="seed")
    metric = _metric(spec, spec.task)
    _check_gates(spec.gates, metric)
    features = _features(spec, schema)
    return TrainingPlan(
        model_name=spec.model_name,
        dataset=spec.dataset,
        schema_version=schema.version,
        features=features,
        target=target,
        task=spec.task,
        candidates=_candidates(spec, spec.task, features),
        metric=metric,
        time_budget_seconds=_budget(spec, limits),
        gates=spec.gates,
        seed=int(spec.seed),
        holdout_fraction=_holdout_fraction(spec),
        limits=limits,
        available_features=schema_features(schema),
        derived=tuple(d for d in schema.derived if d.name in {f.name for f in features}),
    )


def resolve_window(spec: ModelSpec, override: DataWindow | None) -> DataWindow:
    """The window to read: the request's when it has one, else the spec's; an empty dataset is the spec's."""
    window = DataWindow()
    window.CopyFrom(override if override is not None else spec.window)
    if not window.dataset:
        window.dataset = spec.dataset
    if window.dataset != spec.dataset:
        raise SpecError(
            f"window reads dataset {window.dataset!r} but the spec trains on {spec.dataset!r}",
            field="window.dataset",
        )
    if window.max_rows < 0 or window.min_rows < 0:
        raise SpecError("max_rows and min_rows must not be negative", field="window")
    if (
        window.HasField("start_time")
        and window.HasField("end_time")
        and (window.start_time.ToNanoseconds() >= window.end_time.ToNanoseconds())
    ):
        raise SpecError("start_time must be before end_time", field="window")
    return window
