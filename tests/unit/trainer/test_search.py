"""Successive halving: the best configuration wins, losers are cut early, a failing
configuration is a recorded trial, and the deadline truncates instead of overrunning."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from services.common.proto.mlops.v1.model_pb2 import Task
from services.trainer.errors import BudgetExceeded, TrainingFailed
from services.trainer.pipelines import FAMILIES, Choice, Range
from services.trainer.plan import Candidate
from services.trainer.scoring import METRICS
from services.trainer.search import (
    ETA,
    Configuration,
    Deadline,
    configurations,
    rung_sizes,
    successive_halving,
)

LOGISTIC = FAMILIES["logistic_regression"]
ACCURACY = METRICS["accuracy"]
LOG_LOSS = METRICS["log_loss"]


def quality_configs(qualities: list[float]) -> list[Configuration]:
    return [Configuration(LOGISTIC, {"C": q}) for q in qualities]


def by_quality(configuration: Configuration, rows: int) -> float:
    """A score that grows with the data and ranks configurations by their C."""
    return float(configuration.params["C"]) * rows / 1000


def ticking_clock(step: float) -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_rungs_grow_by_eta_and_end_on_every_row() -> None:
    assert rung_sizes(27, 2700, 30) == [100, 300, 900, 2700]
    assert rung_sizes(9, 900, 30) == [100, 300, 900]
    assert rung_sizes(1, 500, 30) == [500]
    sizes = rung_sizes(24, 100, 30)
    assert sizes[-1] == 100 and sizes == sorted(set(sizes))


def test_the_best_configuration_wins_and_each_rung_keeps_a_third() -> None:
    configs = quality_configs([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.4, 0.6])
    result = successive_halving(
        configs, by_quality, rows=900, min_rows=30, metric=ACCURACY, deadline=Deadline(60)
    )
    assert result.best.params == {"C": 0.9}
    per_rung = [sum(1 for t in result.trials if t.rung == r) for r in range(3)]
    assert per_rung == [9, 3, 1]
    assert [t.rows for t in result.trials if t.rung == 2] == [900]
    assert not result.truncated


def test_lower_is_better_metrics_rank_the_other_way() -> None:
    result = successive_halving(
        quality_configs([0.3, 0.9, 0.1]),
        by_quality,
        rows=300,
        min_rows=30,
        metric=LOG_LOSS,
        deadline=Deadline(60),
    )
    assert result.best.params == {"C": 0.1}


def test_a_failing_configuration_is_recorded_and_never_wins() -> None:
    def evaluate(configuration: Configuration, rows: int) -> float:
        if configuration.params["C"] == 0.9:
            raise ValueError("solver exploded")
        return by_quality(configuration, rows)

    result = successive_halving(
        quality_configs([0.3, 0.9, 0.5]),
        evaluate,
        rows=300,
        min_rows=30,
        metric=ACCURACY,
        deadline=Deadline(60),
    )
    assert result.best.params == {"C": 0.5}
    failed = [t for t in result.trials if t.error]
    assert len(failed) == 1 and "ValueError: solver exploded" in failed[0].error
    assert failed[0].as_record()["score"] is None


def test_when_every_configuration_fails_the_search_says_why() -> None:
    def evaluate(configuration: Configuration, rows: int) -> float:
        raise ValueError("singular matrix")

    with pytest.raises(
        TrainingFailed, match="every configuration failed: logistic_regression: ValueError: singular matrix"
    ):
        successive_halving(
            quality_configs([0.1, 0.2]),
            evaluate,
            rows=300,
            min_rows=30,
            metric=ACCURACY,
            deadline=Deadline(60),
        )


def test_a_passed_deadline_truncates_the_search_to_the_furthest_rung_reached() -> None:
    # Every clock reading advances one second; the deadline allows about a dozen trials.
    clock = ticking_clock(1.0)
    configs = quality_configs([0.1 * i for i in range(1, 28)])
    result = successive_halving(
        configs, by_quality, rows=2700, min_rows=30, metric=ACCURACY, deadline=Deadline(12, clock)
    )
    assert result.truncated
    assert len(result.trials) < 27
    finished_rungs = {t.rung for t in result.trials}
    assert finished_rungs == {0}
    assert result.best.params["C"] == max(t.params["C"] for t in result.trials)


def test_a_deadline_passed_before_any_trial_is_a_budget_failure() -> None:
    with pytest.raises(BudgetExceeded, match="before any of 3 configurations finished"):
        successive_halving(
            quality_configs([0.1, 0.2, 0.3]),
            by_quality,
            rows=300,
            min_rows=30,
            metric=ACCURACY,
            deadline=Deadline(0, ticking_clock(1.0)),
        )


def test_configurations_start_from_the_fixed_params_and_are_reproducible_per_seed() -> None:
    candidate = Candidate(
        LOGISTIC, {"max_iter": 500}, {"C": Range(0.01, 10, log=True), "tol": Choice((1e-3, 1e-4))}
    )
    first = configurations([candidate], per_family=5, seed=11)
    assert first[0].params == {"max_iter": 500}
    assert all(c.params["max_iter"] == 500 and 0.01 <= c.params["C"] <= 10 for c in first[1:])
    assert [c.params for c in configurations([candidate], 5, 11)] == [c.params for c in first]
    assert [c.params for c in configurations([candidate], 5, 12)] != [c.params for c in first]


def test_a_candidate_without_a_space_is_one_configuration() -> None:
    configs = configurations([Candidate(FAMILIES["random_forest"], {"n_estimators": 10}, {})], 8, 0)
    assert [c.params for c in configs] == [{"n_estimators": 10}]
    assert FAMILIES["random_forest"].tasks >= {Task.TASK_CLASSIFICATION}
    assert ETA == 3
