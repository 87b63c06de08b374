"""Evaluation gates on real models: a worse challenger is refused, and every failed gate
says which gate and by how much."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.common.proto.mlops.v1.model_pb2 import Gates, Task
from services.trainer.gates import Baseline, evaluate_gates, metric_floor, slice_gap_gate
from services.trainer.pipelines import FAMILIES, build_pipeline
from services.trainer.plan import make_plan
from services.trainer.scoring import METRICS
from services.trainer.tabular import build_table
from services.trainer.training import Trainer
from tests.unit.trainer import synthetic

ACCURACY = METRICS["accuracy"]
LOG_LOSS = METRICS["log_loss"]
ALL = synthetic.FEATURES


@pytest.fixture(scope="module")
def production() -> Any:
    """A good model trained on earlier data of the same concept, as production would be."""
    table = build_table(synthetic.rows(600, seed=21), ALL, Task.TASK_CLASSIFICATION, "label")
    return build_pipeline(FAMILIES["logistic_regression"], Task.TASK_CLASSIFICATION, ALL, {}, 0).fit(
        table.X, table.y
    )


def train(
    gates: Gates,
    *,
    features: tuple[str, ...] = ("f0", "f1", "color", "flag"),
    production: Any = None,
    rows: int = 400,
) -> Any:
    plan = make_plan(synthetic.spec(features=features, gates=gates), synthetic.schema())
    return Trainer(
        plan,
        synthetic.rows(rows, seed=5),
        baseline_version=3 if production is not None else 0,
        baseline_model=production,
        baseline_features=[f.name for f in ALL],
    ).run()


def gate(candidate: Any, name: str) -> Any:
    return next(g for g in candidate.gates if g.name == name)


def test_a_deliberately_worse_challenger_is_refused_with_the_margin(production: Any) -> None:
    # Trained without the two strongest features, the challenger must lose to production.
    candidate = train(Gates(max_regression=0.02), features=("flag", "f1"), production=production)
    challenger = gate(candidate, "challenger")
    assert not candidate.gates_passed
    assert not challenger.passed
    assert challenger.value < -0.02 and challenger.threshold == -0.02
    worse = candidate.metrics["production.accuracy"] - candidate.metrics["accuracy"]
    assert challenger.detail.startswith(f"accuracy {candidate.metrics['accuracy']:.4f} vs production v3")
    assert f"{worse:.4f} worse; may be at most 0.0200 worse" in challenger.detail
    assert "challenger: accuracy" in candidate.gate_failures


def test_an_equally_good_challenger_passes_but_not_when_an_improvement_is_required(production: Any) -> None:
    passing = train(Gates(max_regression=0.02), production=production)
    assert gate(passing, "challenger").passed and passing.gates_passed
    demanding = train(Gates(min_improvement=0.2), production=production)
    challenger = gate(demanding, "challenger")
    assert not challenger.passed
    assert challenger.threshold == 0.2
    assert "must be at least 0.2000 better" in challenger.detail


def test_a_production_model_that_cannot_be_scored_is_not_held_against_the_candidate(production: Any) -> None:
    plan = make_plan(synthetic.spec(gates=Gates(max_regression=0.0)), synthetic.schema())
    candidate = Trainer(
        plan,
        synthetic.rows(400, seed=5),
        baseline_version=2,
        baseline_model=production,
        baseline_features=["f0", "income"],
    ).run()
    challenger = gate(candidate, "challenger")
    assert challenger.passed
    assert "production v2 cannot be scored" in challenger.detail and "income" in challenger.detail


def test_the_metric_floor_says_how_far_short_the_candidate_fell() -> None:
    candidate = train(Gates(min_metric=0.99))
    floor = gate(candidate, "min_metric")
    assert not floor.passed
    assert floor.detail == (f"accuracy {floor.value:.4f} misses the floor 0.9900 by {0.99 - floor.value:.4f}")
    assert candidate.gate_failures.startswith("min_metric: accuracy")


def test_a_floor_on_a_lower_is_better_metric_is_a_ceiling() -> None:
    assert metric_floor(LOG_LOSS, 0.3, 0.5).passed
    ceiling = metric_floor(LOG_LOSS, 0.7, 0.5)
    assert not ceiling.passed and "misses the ceiling 0.5000 by 0.2000" in ceiling.detail


def test_robustness_gates_fail_for_a_model_that_leans_on_one_feature() -> None:
    candidate = train(Gates(max_missing_drop=0.05, max_noise_drop=0.5))
    missing = gate(candidate, "missing_feature")
    assert not missing.passed
    assert "without feature 'f0'" in missing.detail
    assert missing.value == pytest.approx(candidate.metrics["robustness.missing_drop.f0"])
    assert missing.value > candidate.metrics["robustness.missing_drop.flag"]
    assert gate(candidate, "noise_robustness").passed


def test_noise_drop_is_measured_and_can_fail_a_strict_gate() -> None:
    # The label is the sign of f0, whose values mostly sit far closer to 0 than the
    # noise (a few outliers widen its spread): small noise flips many decisions.
    rows = synthetic.rows(600, seed=8, noise=0.0)
    rng = np.random.default_rng(1)
    for i, row in enumerate(rows):
        value = float(rng.choice([-50.0, 50.0])) if i % 20 == 0 else float(rng.normal(0, 0.01))
        row.features["f0"].number_value = value
        row.label.number_value = float(value > 0)
    spec = synthetic.spec(
        families=("hist_gradient_boosting",), features=("f0",), gates=Gates(max_noise_drop=0.05)
    )
    candidate = Trainer(make_plan(spec, synthetic.schema()), rows).run()
    assert candidate.metrics["accuracy"] == 1.0
    noise = gate(candidate, "noise_robustness")
    assert noise.value == candidate.metrics["robustness.noise_drop"] > 0.05
    assert not noise.passed and "under Gaussian noise" in noise.detail
    assert f"over by {noise.value - 0.05:.4f}" in noise.detail


def test_a_slice_much_worse_than_the_others_fails_the_slice_gate() -> None:
    rows = synthetic.rows(900, seed=9)
    rng = np.random.default_rng(0)
    for row in rows:  # blue rows get coin-flip labels: no model can do well on them
        if row.features["color"].string_value == "blue":
            row.label.number_value = float(rng.integers(2))
    plan = make_plan(synthetic.spec(gates=Gates(max_slice_gap=0.1)), synthetic.schema())
    candidate = Trainer(plan, rows).run()
    slices = gate(candidate, "slice_gap:color")
    assert not slices.passed
    assert "for color=blue" in slices.detail.split(" vs ")[0]
    assert slices.value == pytest.approx(candidate.metrics["slice_gap.color"])
    assert f"over by {slices.value - 0.1:.4f}" in slices.detail


def test_slices_too_small_to_judge_pass_and_say_so() -> None:
    result = slice_gap_gate("color", ACCURACY, {"red": 0.9}, 0.1)
    assert result.passed and "nothing to compare" in result.detail


def test_unset_thresholds_run_no_gate_but_the_measurements_are_kept() -> None:
    candidate = train(Gates())
    assert candidate.gates == [] and candidate.gates_passed
    for name in ("robustness.noise_drop", "robustness.missing_drop.f0", "slice_gap.color"):
        assert name in candidate.metrics


def test_evaluate_gates_orders_results_and_reports_all_failures() -> None:
    table = build_table(synthetic.rows(300, seed=2), ALL, Task.TASK_CLASSIFICATION, "label")
    model = build_pipeline(FAMILIES["logistic_regression"], Task.TASK_CLASSIFICATION, ALL, {}, 0).fit(
        table.X, table.y
    )
    score = ACCURACY.score(model, table.X, table.y)
    report = evaluate_gates(
        model=model,
        metric=ACCURACY,
        gates=Gates(min_metric=0.999, max_regression=0.0, max_missing_drop=0.01),
        features=ALL,
        X=table.X,
        y=table.y,
        train_scale=np.ones(4),
        score=score,
        seed=0,
        baseline=Baseline(version=1, model=model, X=table.X),
    )
    assert [g.name for g in report.gates] == ["min_metric", "challenger", "missing_feature"]
    assert [g.passed for g in report.gates] == [False, True, False]
    assert report.failures().count(";") == 1
