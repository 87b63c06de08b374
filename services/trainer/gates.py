"""Evaluation gates: what a candidate must show on the holdout before it may be promoted.

Gates run only when the spec sets their threshold (a zero threshold is "not set", as
protobuf cannot tell the two apart); the measurements behind them are taken either way
and stored as metrics, so a version shows how robust it is even when nobody asked.

Every result says which gate, the measured value, the threshold, and in its detail by
how much it passed or failed. Drops and gaps are in the spec's metric, oriented so that
a positive drop always means "worse", whichever direction the metric runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.proto.mlops.v1.model_pb2 import GateResult, Gates
from services.trainer.scoring import Metric
from services.trainer.tabular import Feature, FeatureKind

NOISE_SCALE = 0.05
"""Noise standard deviation, as a share of each numeric feature's standard deviation in training."""
NOISE_REPEATS = 3
MIN_SLICE_ROWS = 20
"""Slices with fewer holdout rows than this are too noisy to judge and are left out."""
MISSING_SLICE = "(missing)"


@dataclass(frozen=True)
class Baseline:
    """The production model, ready to be scored on the candidate's holdout.

    ``X`` is the holdout in the production model's own feature layout; when the holdout
    cannot be put in that layout (a feature it needs is gone), ``unusable`` says why.
    """

    version: int
    model: Any = None
    X: np.ndarray | None = None
    unusable: str = ""


@dataclass
class GateReport:
    gates: list[GateResult] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failures(self) -> str:
        """The failed gates, one clause each, for the job's error message."""
        return "; ".join(f"{g.name}: {g.detail}" for g in self.gates if not g.passed)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def metric_floor(metric: Metric, value: float, floor: float) -> GateResult:
    """The holdout metric must reach ``floor`` (for a lower-is-better metric: stay under it)."""
    margin = metric.gain(value, floor)
    passed = margin >= 0
    bound = "floor" if metric.greater_is_better else "ceiling"
    if passed:
        detail = f"{metric.name} {_fmt(value)} meets the {bound} {_fmt(floor)} by {_fmt(margin)}"
    else:
        detail = f"{metric.name} {_fmt(value)} misses the {bound} {_fmt(floor)} by {_fmt(-margin)}"
    return GateResult(name="min_metric", passed=passed, value=value, threshold=floor, detail=detail)


def challenger(
    metric: Metric, value: float, production_value: float, production_version: int, gates: Gates
) -> GateResult:
    """The candidate against production on the same holdout.

    With ``min_improvement`` set it must win by at least that much; otherwise it may
    trail by at most ``max_regression`` (0: it may not trail at all).
    """
    gain = metric.gain(value, production_value)
    required = gates.min_improvement if gates.min_improvement > 0 else -gates.max_regression
    passed = gain >= required - 1e-12
    comparison = f"{metric.name} {_fmt(value)} vs production v{production_version} {_fmt(production_value)}"
    standing = f"{_fmt(gain)} better" if gain >= 0 else f"{_fmt(-gain)} worse"
    if gates.min_improvement > 0:
        rule = f"must be at least {_fmt(gates.min_improvement)} better"
    else:
        rule = f"may be at most {_fmt(gates.max_regression)} worse"
    detail = f"{comparison} on the same holdout: {standing}; {rule}"
    return GateResult(name="challenger", passed=passed, value=gain, threshold=required, detail=detail)


def noise_drop(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    metric: Metric,
    features: Sequence[Feature],
    scale: np.ndarray,
    base: float,
    seed: int,
) -> float:
    """Mean metric drop when every numeric feature gets Gaussian noise of ``NOISE_SCALE * scale``."""
    numeric = [i for i, f in enumerate(features) if f.kind is FeatureKind.NUMERIC]
    if not numeric:
        return 0.0
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(NOISE_REPEATS):
        noisy = X.copy()
        for i in numeric:
            column = noisy[:, i].astype(np.float64)
            noisy[:, i] = column + rng.normal(0.0, NOISE_SCALE * scale[i], size=len(column))
        drops.append(metric.gain(base, metric.score(model, noisy, y)))
    return float(np.mean(drops))


def missing_drops(
    model: Any, X: np.ndarray, y: np.ndarray, metric: Metric, features: Sequence[Feature], base: float
) -> dict[str, float]:
    """Metric drop with each feature removed from every row in turn (the others kept)."""
    drops = {}
    for i, feature in enumerate(features):
        without = X.copy()
        without[:, i] = math.nan
        drops[feature.name] = metric.gain(base, metric.score(model, without, y))
    return drops


def slice_scores(model: Any, X: np.ndarray, y: np.ndarray, metric: Metric, column: int) -> dict[str, float]:
    """The metric per category of ``column`` (slices of at least ``MIN_SLICE_ROWS`` rows)."""
    names = np.array(
        [MISSING_SLICE if isinstance(v, float) and math.isnan(v) else str(v) for v in X[:, column]]
    )
    scores = {}
    for value in sorted(set(names)):
        rows = names == value
        if rows.sum() >= MIN_SLICE_ROWS:
            score = metric.score(model, X[rows], y[rows])
            if math.isfinite(score):
                scores[value] = score
    return scores


def slice_gap_gate(feature: str, metric: Metric, scores: dict[str, float], max_gap: float) -> GateResult:
    name = f"slice_gap:{feature}"
    if len(scores) < 2:
        return GateResult(
            name=name,
            passed=True,
            value=0.0,
            threshold=max_gap,
            detail=f"fewer than two categories of {feature!r} have {MIN_SLICE_ROWS}+ holdout rows; nothing to compare",
        )
    ranked = sorted(scores.items(), key=lambda item: metric.rank_key(item[1]))
    (best, best_score), (worst, worst_score) = ranked[0], ranked[-1]
    gap = abs(best_score - worst_score)
    passed = gap <= max_gap + 1e-12
    verdict = "within" if passed else f"over by {_fmt(gap - max_gap)}, beyond"
    detail = (
        f"{metric.name} {_fmt(worst_score)} for {feature}={worst} vs {_fmt(best_score)} for {feature}={best}: "
        f"gap {_fmt(gap)} {verdict} the allowed {_fmt(max_gap)}"
    )
    return GateResult(name=name, passed=passed, value=gap, threshold=max_gap, detail=detail)


def drop_gate(name: str, what: str, metric: Metric, drop: float, allowed: float) -> GateResult:
    passed = drop <= allowed + 1e-12
    verdict = "within" if passed else f"over by {_fmt(drop - allowed)}, beyond"
    detail = f"{metric.name} drops {_fmt(drop)} {what}: {verdict} the allowed {_fmt(allowed)}"
    return GateResult(name=name, passed=passed, value=drop, threshold=allowed, detail=detail)


def evaluate_gates(
    *,
    model: Any,
    metric: Metric,
    gates: Gates,
    features: Sequence[Feature],
    X: np.ndarray,
    y: np.ndarray,
    train_scale: np.ndarray,
    score: float,
    seed: int,
    baseline: Baseline | None,
) -> GateReport:
    """Every gate the spec sets, on the holdout ``(X, y)``, plus the measurements behind them."""
    report = GateReport()
    if gates.min_metric:
        report.gates.append(metric_floor(metric, score, gates.min_metric))

    if baseline is not None:
        if baseline.unusable or baseline.model is None or baseline.X is None:
            report.gates.append(
                GateResult(
                    name="challenger",
                    passed=True,
                    detail=f"production v{baseline.version} cannot be scored on this holdout ({baseline.unusable}); not compared",
                )
            )
        else:
            production = metric.score(baseline.model, baseline.X, y)
            report.measurements[f"production.{metric.name}"] = production
            if math.isfinite(production):
                report.gates.append(challenger(metric, score, production, baseline.version, gates))

    drop = noise_drop(model, X, y, metric, features, train_scale, score, seed)
    report.measurements["robustness.noise_drop"] = drop
    if gates.max_noise_drop:
        what = f"under Gaussian noise of {NOISE_SCALE:.0%} of each numeric feature's spread"
        report.gates.append(drop_gate("noise_robustness", what, metric, drop, gates.max_noise_drop))

    drops = missing_drops(model, X, y, metric, features, score)
    for name, value in drops.items():
        report.measurements[f"robustness.missing_drop.{name}"] = value
    if gates.max_missing_drop and drops:
        worst = max(drops, key=lambda name: drops[name])
        what = f"without feature {worst!r} (the most damaging one to lose)"
        report.gates.append(drop_gate("missing_feature", what, metric, drops[worst], gates.max_missing_drop))

    for i, feature in enumerate(features):
        if feature.kind is not FeatureKind.CATEGORICAL:
            continue
        scores = slice_scores(model, X, y, metric, i)
        if len(scores) >= 2:
            report.measurements[f"slice_gap.{feature.name}"] = max(scores.values()) - min(scores.values())
        if gates.max_slice_gap:
            report.gates.append(slice_gap_gate(feature.name, metric, scores, gates.max_slice_gap))
    return report
