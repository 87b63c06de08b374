"""A training job's computation: its failures are precise, its holdout is the newest
data, its search is recorded, and the same spec on the same rows gives the same model."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from services.common.proto.mlops.v1.model_pb2 import FeatureValue, Gates, ModelSpec, Task
from services.trainer.errors import BudgetExceeded, ConvergenceFailure, DataError
from services.trainer.plan import Limits, make_plan
from services.trainer.training import Trainer
from tests.unit.trainer import synthetic


def run(spec: ModelSpec, rows: list[Any], **kwargs: Any) -> Any:
    return Trainer(make_plan(spec, synthetic.schema(), kwargs.pop("limits", None)), rows, **kwargs).run()


def searched_spec(**kwargs: Any) -> ModelSpec:
    return synthetic.spec(
        families=("logistic_regression", "hist_gradient_boosting"),
        search_space="",
        **kwargs,
    )


def with_default_spaces(spec: ModelSpec) -> ModelSpec:
    spec.estimators[0].search_space_json = '{"C": {"low": 0.01, "high": 10, "log": true}}'
    spec.estimators[
        1
    ].search_space_json = '{"learning_rate": {"low": 0.05, "high": 0.3}, "max_iter": [20, 40]}'
    return spec


def test_an_empty_window_fails_the_job() -> None:
    with pytest.raises(DataError, match="no labelled rows of dataset 'credit'") as caught:
        run(synthetic.spec(), [])
    assert caught.value.field == "window"


def test_a_single_class_window_fails_naming_the_class() -> None:
    rows = synthetic.rows(200)
    for row in rows:
        row.label.CopyFrom(FeatureValue(number_value=1))
    with pytest.raises(DataError, match="the window has only class '1' in 'label'"):
        run(synthetic.spec(), rows)


def test_a_training_part_with_one_class_fails_too() -> None:
    rows = synthetic.rows(200)
    for row in rows[:150]:
        row.label.CopyFrom(FeatureValue(number_value=0))
    with pytest.raises(DataError, match=r"training part \(oldest 75% of the window\) has only class '0'"):
        run(synthetic.spec(), rows)


def test_a_window_too_small_for_the_holdout_says_how_many_rows_it_needs() -> None:
    with pytest.raises(DataError) as caught:
        run(synthetic.spec(), synthetic.rows(60))
    assert str(caught.value) == (
        "window too small for the holdout: 60 labelled rows give 45 to train on and 15 to hold out "
        "(holdout_fraction 0.25); at least 20 and 20 are needed, so at least 80 rows"
    )
    assert caught.value.describe().startswith("invalid_data: window too small")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_family_that_does_not_converge_fails_the_job() -> None:
    with pytest.raises(ConvergenceFailure, match="did not converge in max_iter=2 iterations"):
        run(synthetic.spec(params='{"max_iter": 2}'), synthetic.rows(300))


def test_running_past_the_time_budget_fails_the_job() -> None:
    # Each look at the clock finds three more seconds gone: the fit "took" them.
    ticks = itertools.count()
    with pytest.raises(
        BudgetExceeded, match=r"used \d+\.\ds by the end of evaluation, over the spec's time budget of 5s"
    ):
        run(synthetic.spec(budget=5), synthetic.rows(300), clock=lambda: 3.0 * next(ticks))


def test_the_holdout_is_the_newest_rows() -> None:
    # The concept flips for the newest quarter: a random holdout would score well,
    # a holdout of the newest rows cannot.
    old, new = synthetic.rows(300, seed=1), synthetic.rows(100, seed=2, flip=True)
    for i, row in enumerate(new):
        row.event_time.FromSeconds(old[-1].event_time.seconds + 60 * (i + 1))
    shuffled = list(np.random.default_rng(0).permutation(np.array(old + new, dtype=object)))
    candidate = run(synthetic.spec(), shuffled)
    assert candidate.holdout_rows == 100 and candidate.train_rows == 300
    assert candidate.metrics["accuracy"] < 0.3


def test_a_classifier_gets_the_signature_serving_enforces() -> None:
    candidate = run(synthetic.spec(), synthetic.rows(300))
    signature = candidate.signature
    assert list(signature.feature_names) == ["f0", "f1", "color", "flag"]
    assert [(t.name, t.datatype, list(t.shape)) for t in signature.inputs] == [("features", "FP64", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in signature.outputs] == [
        ("probabilities", "FP64", [-1, 2]),
        ("label", "BYTES", [-1]),
    ]
    assert list(signature.classes) == ["0", "1"] == list(candidate.pipeline.classes_)
    assert signature.task == Task.TASK_CLASSIFICATION


def test_a_regressor_outputs_a_value() -> None:
    spec = synthetic.spec(families=("ridge",), metric="neg_rmse")
    spec.task = Task.TASK_REGRESSION
    rows = synthetic.rows(300)
    for row in rows:
        row.label.number_value = 3 * row.features["f0"].number_value + 1
    candidate = run(spec, rows)
    assert [(t.name, t.datatype) for t in candidate.signature.outputs] == [("value", "FP64")]
    assert not candidate.signature.classes
    assert candidate.metrics["r2"] > 0.99 and candidate.metrics["neg_rmse"] > -0.1


def test_permutation_importances_rank_the_features_that_matter() -> None:
    candidate = run(synthetic.spec(), synthetic.rows(400))
    importances = candidate.importances
    assert importances["f0"] > importances["f1"] > importances["flag"]
    assert candidate.metrics["importance.f0"] == importances["f0"]


def test_every_search_trial_is_recorded_and_the_winner_is_among_them() -> None:
    progress: list[float] = []
    candidate = run(
        with_default_spaces(searched_spec()), synthetic.rows(600), progress=lambda f, m: progress.append(f)
    )
    trials = candidate.trials
    assert len(trials) > 16
    assert {t.family for t in trials} == {"logistic_regression", "hist_gradient_boosting"}
    winner = candidate.configuration
    assert any(t.family == winner.family.name and t.params == winner.params for t in trials)
    assert candidate.metrics["search.trials"] == len(trials)
    assert progress == sorted(progress) and progress[-1] == 1.0
    json.dumps([t.as_record() for t in trials])


def test_same_spec_same_window_same_model() -> None:
    rows = synthetic.rows(500, seed=4)
    first = run(with_default_spaces(searched_spec(seed=3)), rows)
    second = run(with_default_spaces(searched_spec(seed=3)), list(reversed(rows)))
    assert first.metrics == second.metrics
    assert first.configuration.describe() == second.configuration.describe()
    assert [t.as_record()["score"] for t in first.trials] == [t.as_record()["score"] for t in second.trials]


def test_min_rows_limits_come_from_the_trainer_settings() -> None:
    limits = Limits(min_holdout_rows=5, min_train_rows=10)
    candidate = run(synthetic.spec(gates=Gates()), synthetic.rows(40), limits=limits)
    assert (candidate.train_rows, candidate.holdout_rows) == (30, 10)
