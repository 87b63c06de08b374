"""One training job's computation, from a window's rows to a judged candidate. No I/O.

The window is split by time: the newest ``holdout_fraction`` of the rows is the
holdout, which nothing in training or search ever sees; it is the "fresh" data on
which the candidate and the production model are compared. When there is a search,
the training part is split the same way again into fit and validation rows.

This runs in a worker thread (it is CPU-bound); it reports progress through a callback
and checks the time budget between steps, since a running fit cannot be interrupted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.inspection import permutation_importance

from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import GateResult, ReferenceProfile, Signature, Task, TensorSpec
from services.trainer.errors import BudgetExceeded, ConvergenceFailure, DataError
from services.trainer.gates import Baseline, GateReport, evaluate_gates
from services.trainer.pipelines import build_pipeline, converged
from services.trainer.plan import TrainingPlan
from services.trainer.profiles import reference_profile
from services.trainer.scoring import holdout_scores
from services.trainer.search import (
    Configuration,
    Deadline,
    SearchResult,
    Trial,
    configurations,
    successive_halving,
)
from services.trainer.tabular import Feature, FeatureKind, Table, build_table, feature_matrix

SEARCH_SHARE = 0.6
"""Share of the time budget the search may use; the rest is for the final fit and the gates."""
CONFIGURATIONS_PER_FAMILY = 8
VALIDATION_FRACTION = 0.2
IMPORTANCE_REPEATS = 5
IMPORTANCE_ROWS = 1000
"""Holdout rows each permutation is scored on (a seeded sample): importances settle well
before that, and on large holdouts they would otherwise dominate a job's time."""

MAX_FEATURE_METRICS = 40
"""Per-feature metrics kept of each kind (the largest), so a wide dataset stays within
the registry's limit on metrics per version."""

Progress = Callable[[float, str], None]
Model = Any
"""A fitted model: a scikit-learn ``Pipeline``, or a ``RiverEstimator`` for the online flavor."""


def _bounded(measurements: dict[str, float]) -> dict[str, float]:
    """Finite measurements, keeping only the largest ``MAX_FEATURE_METRICS`` of each per-feature kind."""
    kept: dict[str, float] = {}
    per_kind: dict[str, list[tuple[str, float]]] = {}
    for name, value in measurements.items():
        if not math.isfinite(value):
            continue
        kind, _, feature = name.rpartition(".")
        if kind in ("robustness.missing_drop", "slice_gap"):
            per_kind.setdefault(kind, []).append((name, value))
        else:
            kept[name] = value
    for items in per_kind.values():
        kept.update(sorted(items, key=lambda item: -abs(item[1]))[:MAX_FEATURE_METRICS])
    return kept


@dataclass(frozen=True)
class TrainedCandidate:
    """A fitted pipeline with everything the registry stores beside it."""

    pipeline: Model
    configuration: Configuration
    metrics: dict[str, float]
    gates: list[GateResult]
    gates_passed: bool
    gate_failures: str
    signature: Signature
    trials: list[Trial] = field(default_factory=list)
    search_truncated: bool = False
    importances: dict[str, float] = field(default_factory=dict)
    reference: ReferenceProfile = field(default_factory=ReferenceProfile)
    """The numeric features of the rows the pipeline was fitted on: the monitor's reference."""
    train_rows: int = 0
    holdout_rows: int = 0
    seconds: float = 0.0


def split_sizes(rows: int, holdout_fraction: float, plan: TrainingPlan) -> tuple[int, int]:
    """``(train, holdout)`` row counts, or a :class:`DataError` saying what is missing."""
    holdout = math.ceil(rows * holdout_fraction)
    train = rows - holdout
    limits = plan.limits
    if holdout < limits.min_holdout_rows or train < limits.min_train_rows:
        needed = max(
            math.ceil(limits.min_holdout_rows / holdout_fraction),
            limits.min_train_rows + limits.min_holdout_rows,
        )
        raise DataError(
            f"window too small for the holdout: {rows} labelled rows give {train} to train on and {holdout} "
            f"to hold out (holdout_fraction {holdout_fraction:g}); at least {limits.min_train_rows} and "
            f"{limits.min_holdout_rows} are needed, so at least {needed} rows",
            field="window",
        )
    return train, holdout


def _check_classes(y: np.ndarray, what: str, target: str) -> None:
    classes = sorted(set(y))
    if len(classes) < 2:
        only = f"only class {classes[0]!r}" if classes else "no class"
        raise DataError(f"{what} has {only} in {target!r}: a classifier needs at least two", field=target)


def signature_for(plan: TrainingPlan, pipeline: Model) -> Signature:
    """What serving enforces: one ``features`` tensor in ``feature_names`` order (raw fields
    instead when some features are derived: serving derives them), and the outputs."""
    signature = Signature(
        inputs=[TensorSpec(name="features", datatype="FP64", shape=[-1, len(plan.features)], allow_nan=True)],
        feature_names=[f.name for f in plan.features],
        task=plan.task,
        derived=plan.derived,
    )
    if plan.task == Task.TASK_CLASSIFICATION:
        classes = [str(c) for c in pipeline.classes_]
        signature.classes.extend(classes)
        signature.outputs.extend(
            [
                TensorSpec(name="probabilities", datatype="FP64", shape=[-1, len(classes)]),
                TensorSpec(name="label", datatype="BYTES", shape=[-1]),
            ]
        )
    else:
        signature.outputs.append(TensorSpec(name="value", datatype="FP64", shape=[-1]))
    return signature


def _spread(X: np.ndarray, features: Sequence[Feature]) -> np.ndarray:
    """Per-column standard deviation of the numeric features (0 for categories and constants)."""
    spread = np.zeros(len(features))
    for i, feature in enumerate(features):
        if feature.kind is FeatureKind.NUMERIC:
            column = X[:, i].astype(np.float64)
            if np.isfinite(column).any():
                spread[i] = float(np.nanstd(column))
    return np.nan_to_num(spread)


class Trainer:
    """Trains one plan on one window. Create one per job; call :meth:`run` once."""

    def __init__(
        self,
        plan: TrainingPlan,
        rows: Sequence[FeatureRow],
        *,
        baseline_version: int = 0,
        baseline_model: Any = None,
        baseline_features: Sequence[str] = (),
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.plan = plan
        self._rows = rows
        self._baseline_version = baseline_version
        self._baseline_model = baseline_model
        self._baseline_features = list(baseline_features)
        self._progress = progress or (lambda fraction, message: None)
        self._clock = clock
        self.trials: list[Trial] = []
        """Every search trial so far, in the order they ran: kept when the job fails."""

    def run(self) -> TrainedCandidate:
        plan = self.plan
        budget = Deadline(plan.time_budget_seconds, self._clock)
        table = build_table(self._rows, plan.features, plan.task, plan.target)
        if len(table) == 0:
            raise DataError(
                f"the window has no labelled rows of dataset {plan.dataset!r} to train on", field="window"
            )
        if plan.task == Task.TASK_CLASSIFICATION:
            _check_classes(table.y, "the window", plan.target)
        n_train, _ = split_sizes(len(table), plan.holdout_fraction, plan)
        train, holdout = table.rows(slice(0, n_train)), table.rows(slice(n_train, None))
        if plan.task == Task.TASK_CLASSIFICATION:
            pct = round((1 - plan.holdout_fraction) * 100)
            _check_classes(train.y, f"the training part (oldest {pct}% of the window)", plan.target)
        self._progress(0.05, f"{len(train)} rows to train on, {len(holdout)} held out")

        search = self._search(train, budget)
        best = search.best
        self._progress(0.7, f"fitting {best.describe()} on {len(train)} rows")
        if budget.passed():
            raise BudgetExceeded(self._over_budget(budget, search, "before the final fit"))
        pipeline = build_pipeline(best.family, plan.task, plan.features, best.params, plan.seed)
        pipeline.fit(train.X, train.y)
        ok, why = converged(pipeline)
        if not ok:
            raise ConvergenceFailure(why, field="estimators")

        self._progress(0.8, "scoring the holdout")
        metrics = holdout_scores(pipeline, holdout.X, holdout.y, plan.task)
        score = metrics[plan.metric.name]
        if not math.isfinite(score):
            raise DataError(
                f"{plan.metric.name} is undefined on the holdout of {len(holdout)} rows "
                f"(classes there: {', '.join(sorted(set(map(str, holdout.y))))}); choose another metric or a wider window",
                field="metric",
            )
        self._progress(0.85, "evaluating the gates")
        report = evaluate_gates(
            model=pipeline,
            metric=plan.metric,
            gates=plan.gates,
            features=plan.features,
            X=holdout.X,
            y=holdout.y,
            train_scale=_spread(train.X, plan.features),
            score=score,
            seed=plan.seed,
            baseline=self._baseline(holdout),
        )
        self._progress(0.92, "permutation importances")
        importances = self._importances(pipeline, holdout)
        if budget.passed():
            raise BudgetExceeded(self._over_budget(budget, search, "by the end of evaluation"))
        return self._candidate(pipeline, best, search, metrics, report, importances, train, holdout, budget)

    def _search(self, train: Table, budget: Deadline) -> SearchResult:
        plan = self.plan
        configs = configurations(plan.candidates, CONFIGURATIONS_PER_FAMILY, plan.seed)
        if len(configs) == 1:
            return SearchResult(configs[0], math.nan)
        n_fit = len(train) - max(1, math.ceil(len(train) * VALIDATION_FRACTION))
        fit, validation = train.rows(slice(0, n_fit)), train.rows(slice(n_fit, None))

        def evaluate(configuration: Configuration, n_rows: int) -> float:
            rows = fit.rows(slice(len(fit) - n_rows, None))
            pipeline = build_pipeline(
                configuration.family, plan.task, plan.features, configuration.params, plan.seed
            )
            pipeline.fit(rows.X, rows.y)
            ok, why = converged(pipeline)
            if not ok:
                raise ConvergenceFailure(why)
            return plan.metric.score(pipeline, validation.X, validation.y)

        def on_trial(trial: Trial, done: int, planned: int) -> None:
            self.trials.append(trial)
            score = "failed" if math.isnan(trial.score) else f"{plan.metric.name} {trial.score:.4f}"
            self._progress(
                0.05 + 0.6 * min(1.0, done / planned),
                f"trial {done}/{planned}: {trial.family} on {trial.rows} rows, {score}",
            )

        search_deadline = Deadline(plan.time_budget_seconds * SEARCH_SHARE - budget.elapsed(), self._clock)
        return successive_halving(
            configs,
            evaluate,
            rows=len(fit),
            min_rows=min(len(fit), max(plan.limits.min_train_rows, 30)),
            metric=plan.metric,
            deadline=search_deadline,
            on_trial=on_trial,
        )

    def _baseline(self, holdout: Table) -> Baseline | None:
        if not self._baseline_version:
            return None
        if self._baseline_model is None:
            return Baseline(self._baseline_version, unusable="its artifact could not be loaded")
        available = {f.name: f for f in self.plan.features} | dict(self.plan.available_features)
        missing = [name for name in self._baseline_features if name not in available]
        if missing or not self._baseline_features:
            why = (
                f"it needs feature(s) {', '.join(missing)} the dataset no longer has"
                if missing
                else "it has no signature"
            )
            return Baseline(self._baseline_version, unusable=why)
        rows = self._holdout_rows(holdout)
        X = feature_matrix(rows, [available[name] for name in self._baseline_features])
        return Baseline(self._baseline_version, model=self._baseline_model, X=X)

    def _holdout_rows(self, holdout: Table) -> list[FeatureRow]:
        by_id = {row.event_id: row for row in self._rows}
        return [by_id[event_id] for event_id in holdout.event_ids]

    def _importances(self, pipeline: Model, holdout: Table) -> dict[str, float]:
        metric = self.plan.metric

        def scorer(model: Any, X: np.ndarray, y: np.ndarray) -> float:
            value = metric.score(model, X, y)
            return value if metric.greater_is_better else -value

        result = permutation_importance(
            pipeline,
            holdout.X,
            holdout.y,
            scoring=scorer,
            n_repeats=IMPORTANCE_REPEATS,
            max_samples=min(1.0, IMPORTANCE_ROWS / len(holdout)),
            random_state=self.plan.seed,
            n_jobs=1,
        )
        return {f.name: float(v) for f, v in zip(self.plan.features, result.importances_mean, strict=True)}

    def _over_budget(self, budget: Deadline, search: SearchResult, when: str) -> str:
        return (
            f"the job used {budget.elapsed():.1f}s {when}, over the spec's time budget of "
            f"{self.plan.time_budget_seconds:g}s ({len(search.trials)} search trials ran); "
            "raise time_budget_seconds, narrow the search, or shorten the window"
        )

    def _candidate(
        self,
        pipeline: Model,
        best: Configuration,
        search: SearchResult,
        metrics: dict[str, float],
        report: GateReport,
        importances: dict[str, float],
        train: Table,
        holdout: Table,
        budget: Deadline,
    ) -> TrainedCandidate:
        recorded = {name: value for name, value in metrics.items() if math.isfinite(value)}
        recorded.update(_bounded(report.measurements))
        top = sorted(importances, key=lambda name: -abs(importances[name]))[:MAX_FEATURE_METRICS]
        recorded.update(
            {f"importance.{name}": importances[name] for name in top if math.isfinite(importances[name])}
        )
        recorded["train_rows"] = float(len(train))
        recorded["holdout_rows"] = float(len(holdout))
        if search.trials:
            recorded["search.trials"] = float(len(search.trials))
            recorded["search.best_validation_score"] = search.best_score
        self._progress(1.0, "done")
        return TrainedCandidate(
            pipeline=pipeline,
            configuration=best,
            metrics=recorded,
            gates=report.gates,
            gates_passed=report.passed,
            gate_failures=report.failures(),
            signature=signature_for(self.plan, pipeline),
            trials=search.trials,
            search_truncated=search.truncated,
            importances=importances,
            reference=reference_profile(train, self.plan.seed),
            train_rows=len(train),
            holdout_rows=len(holdout),
            seconds=budget.elapsed(),
        )
