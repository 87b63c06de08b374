"""Estimator families and the scikit-learn pipelines built from them.

A pipeline is the whole model: imputation, encoding of categories, scaling where the
family needs it, and the estimator. Serving loads and runs it as one object, so what
it serves is exactly what the gates evaluated. Only scikit-learn's own classes are
used, which is what lets the artifact load through skops' trusted-type check. The river
families (:mod:`services.trainer.river_models`) and the booster families, XGBoost and
LightGBM (:mod:`services.trainer.boosters`), prepare their own rows and are stored with
their own flavors.

Search spaces are JSON objects mapping an estimator parameter to either a list of
choices or a range::

    {"C": {"low": 0.001, "high": 100, "log": true},
     "max_depth": [null, 8, 16],
     "min_samples_leaf": {"low": 1, "high": 20, "type": "int"}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from services.common.flavors.lightgbm import LightGBMFlavor
from services.common.flavors.river import RiverFlavor
from services.common.flavors.skops import SkopsFlavor
from services.common.flavors.xgboost import XGBoostFlavor
from services.common.proto.mlops.v1.model_pb2 import Task
from services.common.values import MISSING_CATEGORY
from services.trainer.boosters import LightGBMEstimator, XGBoostEstimator
from services.trainer.errors import SpecError
from services.trainer.river_models import RiverEstimator
from services.trainer.tabular import Feature, FeatureKind

# Parameters the trainer owns: seeds come from the spec, parallelism from the machine.
RESERVED_PARAMS = frozenset({"random_state", "n_jobs", "verbose", "warm_start", "categorical_features"})
# Rare categories beyond this many are pooled, so a high-cardinality field cannot blow up a tree's input.
MAX_TREE_CATEGORIES = 250


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def sample(self, rng: np.random.Generator) -> Any:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return int(round(value)) if self.integer else float(value)


Distribution = Choice | Range


SKOPS = SkopsFlavor.name
RIVER = RiverFlavor.name
XGBOOST = XGBoostFlavor.name
LIGHTGBM = LightGBMFlavor.name


@dataclass(frozen=True)
class Family:
    """One estimator family: what it can do, how it is built, where its search starts.

    ``flavor`` is how its models are stored: ``skops`` (a scikit-learn Pipeline),
    ``river-hmac`` (an online model that does its own preprocessing, a signed pickle), or
    ``xgboost``/``lightgbm`` (the booster alone, in its library's own format).
    ``numeric_only`` families take numbers only: nothing in front of the model encodes
    categories.
    """

    name: str
    tasks: frozenset[Task.ValueType]
    make: Callable[[Task.ValueType, dict[str, Any], int], Any]
    preprocess: Callable[[Sequence[Feature]], ColumnTransformer] | None = None
    default_space: Mapping[str, Distribution] = field(default_factory=dict)
    flavor: str = SKOPS
    numeric_only: bool = False

    def estimator(self, task: Task.ValueType, params: Mapping[str, Any], seed: int) -> Any:
        return self.make(task, dict(params), seed)

    def parameter_names(self, task: Task.ValueType) -> set[str]:
        return set(self.make(task, {}, 0).get_params(deep=False)) - RESERVED_PARAMS


def _columns(features: Sequence[Feature], kind: FeatureKind) -> list[int]:
    return [i for i, f in enumerate(features) if f.kind is kind]


def _scaled_one_hot(features: Sequence[Feature]) -> ColumnTransformer:
    """Linear models: median-imputed, standardised numbers; one-hot categories."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            ("encode", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    return _assemble(features, numeric, categorical)


def _tree_ordinal(features: Sequence[Feature]) -> ColumnTransformer:
    """Random forests: median-imputed numbers, ordinal categories (unknown and missing: -1)."""
    numeric = SimpleImputer(strategy="median")
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
            (
                "encode",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, max_categories=MAX_TREE_CATEGORIES
                ),
            ),
        ]
    )
    return _assemble(features, numeric, categorical)


def _native_missing(features: Sequence[Feature]) -> ColumnTransformer:
    """Histogram boosting handles missing values itself; categories become ordinal codes.

    Its native categorical mode is not used on purpose: it embeds a ``functools.partial``
    in the fitted model, which the artifact loader's trusted-type check refuses.
    """
    categorical = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        max_categories=MAX_TREE_CATEGORIES,
    )
    return _assemble(features, "passthrough", categorical)


def _assemble(features: Sequence[Feature], numeric: Any, categorical: Any) -> ColumnTransformer:
    parts: list[tuple[str, Any, list[int]]] = []
    if numeric_columns := _columns(features, FeatureKind.NUMERIC):
        parts.append(("numeric", numeric, numeric_columns))
    if categorical_columns := _columns(features, FeatureKind.CATEGORICAL):
        parts.append(("categorical", categorical, categorical_columns))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.3)


def _logistic(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
    return LogisticRegression(**{"max_iter": 1000, **params}, random_state=seed)


def _ridge(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
    return Ridge(**params, random_state=seed)


def _hist_gradient_boosting(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
    cls = (
        HistGradientBoostingClassifier if task == Task.TASK_CLASSIFICATION else HistGradientBoostingRegressor
    )
    return cls(**params, random_state=seed)


def _random_forest(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
    cls = RandomForestClassifier if task == Task.TASK_CLASSIFICATION else RandomForestRegressor
    return cls(**params, random_state=seed, n_jobs=1)


def _river(name: str) -> Callable[[Task.ValueType, dict[str, Any], int], Any]:
    def make(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
        # River's linear models and Hoeffding trees draw no random numbers: no seed to pass.
        return RiverEstimator(name, task, params)

    return make


def _xgboost(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
    return XGBoostEstimator(task, params, seed)


def _lightgbm(task: Task.ValueType, params: dict[str, Any], seed: int) -> Any:
    return LightGBMEstimator(task, params, seed)


CLASSIFICATION = frozenset({Task.TASK_CLASSIFICATION})
REGRESSION = frozenset({Task.TASK_REGRESSION})
BOTH = CLASSIFICATION | REGRESSION

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "logistic_regression",
            CLASSIFICATION,
            _logistic,
            _scaled_one_hot,
            {"C": Range(1e-3, 1e2, log=True)},
        ),
        Family(
            "linear_regression",
            REGRESSION,
            _ridge,
            _scaled_one_hot,
            {"alpha": Range(1e-3, 1e3, log=True)},
        ),
        Family(
            "hist_gradient_boosting",
            BOTH,
            _hist_gradient_boosting,
            _native_missing,
            {
                "learning_rate": Range(0.02, 0.3, log=True),
                "max_leaf_nodes": Range(8, 63, integer=True),
                "min_samples_leaf": Range(5, 50, integer=True),
                "l2_regularization": Range(1e-6, 1.0, log=True),
            },
        ),
        Family(
            "random_forest",
            BOTH,
            _random_forest,
            _tree_ordinal,
            {
                "n_estimators": Choice((50, 100, 200)),
                "max_depth": Choice((None, 8, 16)),
                "min_samples_leaf": Range(1, 10, integer=True),
                "max_features": Choice(("sqrt", 0.5, 1.0)),
            },
        ),
        Family(
            "river_logistic_regression",
            CLASSIFICATION,
            _river("river_logistic_regression"),
            default_space={"l2": Range(1e-6, 1e-2, log=True)},
            flavor=RIVER,
        ),
        Family(
            "river_linear_regression",
            REGRESSION,
            _river("river_linear_regression"),
            default_space={"l2": Range(1e-6, 1e-2, log=True)},
            flavor=RIVER,
        ),
        Family(
            "river_hoeffding_tree",
            BOTH,
            _river("river_hoeffding_tree"),
            default_space={"grace_period": Range(50, 400, integer=True), "delta": Choice((1e-7, 1e-5, 1e-3))},
            flavor=RIVER,
        ),
        Family(
            "xgboost",
            BOTH,
            _xgboost,
            default_space={
                "learning_rate": Range(0.02, 0.3, log=True),
                "max_depth": Range(2, 8, integer=True),
                "min_child_weight": Range(1, 10, log=True),
                "subsample": Range(0.6, 1.0),
                "colsample_bytree": Range(0.6, 1.0),
                "reg_lambda": Range(1e-3, 10.0, log=True),
            },
            flavor=XGBOOST,
            numeric_only=True,
        ),
        Family(
            "lightgbm",
            BOTH,
            _lightgbm,
            default_space={
                "learning_rate": Range(0.02, 0.3, log=True),
                "num_leaves": Range(8, 63, integer=True),
                "min_child_samples": Range(5, 50, integer=True),
                "colsample_bytree": Range(0.6, 1.0),
                "reg_lambda": Range(1e-6, 1.0, log=True),
            },
            flavor=LIGHTGBM,
            numeric_only=True,
        ),
    )
}
ALIASES = {
    "logistic": "logistic_regression",
    "ridge": "linear_regression",
    "hgb": "hist_gradient_boosting",
    "gradient_boosting": "hist_gradient_boosting",
    "rf": "random_forest",
    "xgb": "xgboost",
    "lgbm": "lightgbm",
}
# Tried, in this order, when a spec names no estimator.
DEFAULT_FAMILIES = {
    Task.TASK_CLASSIFICATION: ("logistic_regression", "hist_gradient_boosting", "random_forest"),
    Task.TASK_REGRESSION: ("linear_regression", "hist_gradient_boosting", "random_forest"),
}


def resolve_family(name: str, task: Task.ValueType, field_name: str) -> Family:
    """The family ``name`` names for ``task``; ``linear`` means logistic or ridge by task."""
    key = name.strip().lower()
    if key == "linear":
        key = "logistic_regression" if task == Task.TASK_CLASSIFICATION else "linear_regression"
    key = ALIASES.get(key, key)
    family = FAMILIES.get(key)
    if family is None:
        raise SpecError(
            f"unknown estimator family {name!r}; known: {', '.join(sorted(FAMILIES))}", field=field_name
        )
    if task not in family.tasks:
        other = "linear_regression" if family.name == "logistic_regression" else "logistic_regression"
        raise SpecError(
            f"family {family.name!r} cannot do {Task.Name(task)}; use {other!r} or another family",
            field=field_name,
        )
    return family


def _json_object(text: str, field_name: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc}", field=field_name) from None
    if not isinstance(value, dict):
        raise SpecError(f"must be a JSON object, got {type(value).__name__}", field=field_name)
    return value


def _check_names(names: Sequence[str], family: Family, task: Task.ValueType, field_name: str) -> None:
    reserved = sorted(set(names) & RESERVED_PARAMS)
    if reserved:
        raise SpecError(
            f"{', '.join(reserved)} cannot be set: the trainer sets it (the seed comes from the spec's seed)",
            field=field_name,
        )
    known = family.parameter_names(task)
    unknown = sorted(set(names) - known)
    if unknown:
        raise SpecError(
            f"unknown parameter(s) {', '.join(unknown)} for {family.name}; known: {', '.join(sorted(known))}",
            field=field_name,
        )


def parse_params(text: str, family: Family, task: Task.ValueType, field_name: str) -> dict[str, Any]:
    """Fixed estimator parameters from JSON, checked by name and by scikit-learn's own rules."""
    params = _json_object(text, field_name)
    _check_names(list(params), family, task, field_name)
    check_values(family, task, params, field_name)
    return params


def check_values(family: Family, task: Task.ValueType, params: Mapping[str, Any], field_name: str) -> None:
    """Refuse values scikit-learn would refuse at fit time, before any time is spent."""
    estimator = family.estimator(task, params, 0)
    try:
        estimator._validate_params()
    except (ValueError, TypeError) as exc:
        raise SpecError(f"invalid parameter for {family.name}: {exc}", field=field_name) from None


def parse_search_space(
    text: str, family: Family, task: Task.ValueType, field_name: str
) -> dict[str, Distribution]:
    """A search space from JSON (see the module docstring for its shape)."""
    raw = _json_object(text, field_name)
    _check_names(list(raw), family, task, field_name)
    space: dict[str, Distribution] = {}
    for name, spec in raw.items():
        where = f"{field_name}.{name}"
        if isinstance(spec, list):
            if not spec:
                raise SpecError("a list of choices must not be empty", field=where)
            space[name] = Choice(tuple(spec))
        elif isinstance(spec, dict):
            space[name] = _range(spec, where)
        else:
            raise SpecError("must be a list of choices or an object with low and high", field=where)
    return space


def _range(spec: dict[str, Any], where: str) -> Range:
    unknown = sorted(set(spec) - {"low", "high", "log", "type"})
    if unknown:
        raise SpecError(f"unknown key(s) {', '.join(unknown)}; allowed: low, high, log, type", field=where)
    low, high = spec.get("low"), spec.get("high")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not all(math.isfinite(v) for v in (low, high)):  # type: ignore[arg-type]
        raise SpecError("low and high must be finite numbers", field=where)
    assert isinstance(low, int | float) and isinstance(high, int | float)
    if low >= high:
        raise SpecError(f"low ({low}) must be below high ({high})", field=where)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpecError("log must be true or false", field=where)
    if log and low <= 0:
        raise SpecError("a log range needs low > 0", field=where)
    kind = spec.get("type", "float")
    if kind not in ("int", "float"):
        raise SpecError(f"type must be 'int' or 'float', got {kind!r}", field=where)
    return Range(float(low), float(high), log=log, integer=kind == "int")


def build_pipeline(
    family: Family, task: Task.ValueType, features: Sequence[Feature], params: Mapping[str, Any], seed: int
) -> Any:
    """The full model: the family's preprocessing for ``features``, then its estimator
    (a scikit-learn ``Pipeline``; a :class:`RiverEstimator` or a booster estimator for the
    families that prepare their own rows)."""
    estimator = family.estimator(task, params, seed)
    if family.preprocess is None:  # river and booster families prepare their own rows
        return estimator.with_features(features)
    return Pipeline([("prepare", family.preprocess(features)), ("model", estimator)])


def converged(pipeline: Any) -> tuple[bool, str]:
    """Whether an iterative estimator stopped before its iteration cap, and what to say if not."""
    if not isinstance(pipeline, Pipeline):
        return True, ""
    estimator = pipeline.named_steps["model"]
    n_iter = getattr(estimator, "n_iter_", None)
    max_iter = getattr(estimator, "max_iter", None)
    if isinstance(estimator, LogisticRegression) and n_iter is not None and max_iter is not None:
        used = int(np.max(n_iter))
        if used >= max_iter:
            return False, (
                f"logistic_regression did not converge in max_iter={max_iter} iterations; "
                "raise max_iter or C, or scale the inputs"
            )
    return True, ""
