"""A spec is checked against its dataset's schema before any row is read; every mistake
is refused with the spec field at fault named."""

from __future__ import annotations

import pytest

from services.common.proto.mlops.v1.datasets_pb2 import FieldSpec, FieldType
from services.common.proto.mlops.v1.model_pb2 import DataWindow, EstimatorSpec, Gates, ModelSpec, Task
from services.trainer.errors import SpecError
from services.trainer.pipelines import Choice, Range
from services.trainer.plan import Limits, make_plan, resolve_window
from services.trainer.tabular import FeatureKind
from tests.unit.trainer import synthetic


def refused(spec: ModelSpec, field: str, *words: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        make_plan(spec, synthetic.schema())
    assert caught.value.field == field, caught.value.describe()
    for word in words:
        assert word in str(caught.value), caught.value.describe()
    return caught.value


def test_a_valid_spec_becomes_a_plan_with_typed_features() -> None:
    plan = make_plan(synthetic.spec(), synthetic.schema())
    assert [(f.name, f.kind) for f in plan.features] == [
        ("f0", FeatureKind.NUMERIC),
        ("f1", FeatureKind.NUMERIC),
        ("color", FeatureKind.CATEGORICAL),
        ("flag", FeatureKind.NUMERIC),
    ]
    assert plan.metric.name == "accuracy"
    assert plan.holdout_fraction == 0.25
    assert [c.family.name for c in plan.candidates] == ["logistic_regression"]


def test_without_features_every_usable_field_is_taken_but_ids_text_and_private_fields_are_not() -> None:
    schema = synthetic.schema()
    schema.fields.append(FieldSpec(name="account", type=FieldType.FIELD_TYPE_CATEGORY, private=True))
    spec = synthetic.spec(features=())
    plan = make_plan(spec, schema)
    assert [f.name for f in plan.features] == ["f0", "f1", "color", "flag"]


def test_without_estimators_the_search_covers_the_default_families() -> None:
    spec = synthetic.spec()
    del spec.estimators[:]
    plan = make_plan(spec, synthetic.schema())
    assert [c.family.name for c in plan.candidates] == [
        "logistic_regression",
        "hist_gradient_boosting",
        "random_forest",
    ]
    assert all(c.space for c in plan.candidates)
    assert plan.searches


def test_unknown_feature_is_refused_naming_the_field_and_what_exists() -> None:
    error = refused(synthetic.spec(features=("f0", "income")), "features[1]", "'income'", "f1")
    assert error.describe().startswith("invalid_spec: unknown field 'income'")


@pytest.mark.parametrize(
    ("features", "field", "words"),
    [
        (("f0", "note"), "features[1]", ("FIELD_TYPE_TEXT",)),
        (("f0", "ts"), "features[1]", ("FIELD_TYPE_TIMESTAMP",)),
        (("label", "f0"), "features[0]", ("is the label",)),
        (("f0", "f0"), "features[1]", ("twice",)),
    ],
)
def test_unusable_features_are_refused(features: tuple[str, ...], field: str, words: tuple[str, ...]) -> None:
    refused(synthetic.spec(features=features), field, *words)


def test_target_must_be_the_datasets_label() -> None:
    spec = synthetic.spec()
    spec.target = "f1"
    refused(spec, "target", "'f1'", "'label'")


def test_task_must_be_set() -> None:
    spec = synthetic.spec()
    spec.task = Task.TASK_UNSPECIFIED
    refused(spec, "task")


def test_model_name_must_be_a_valid_registry_name() -> None:
    refused(synthetic.spec(name="../etc"), "model_name", "'../etc'")


@pytest.mark.parametrize(
    ("metric", "words"), [("r2", ("does not apply", "accuracy")), ("precision@5", ("unknown metric",))]
)
def test_metric_must_exist_and_fit_the_task(metric: str, words: tuple[str, ...]) -> None:
    refused(synthetic.spec(metric=metric), "metric", *words)


def test_unknown_family_is_refused_with_the_known_ones() -> None:
    refused(
        synthetic.spec(families=("catboost",)), "estimators[0].family", "'catboost'", "lightgbm", "xgboost"
    )


def test_a_classifier_family_cannot_do_regression() -> None:
    spec = synthetic.spec(families=("hist_gradient_boosting", "logistic_regression"))
    spec.task = Task.TASK_REGRESSION
    spec.metric = "r2"
    refused(spec, "estimators[1].family", "cannot do TASK_REGRESSION", "linear_regression")


def test_linear_means_logistic_or_ridge_by_task() -> None:
    spec = synthetic.spec(families=("linear",))
    assert make_plan(spec, synthetic.schema()).candidates[0].family.name == "logistic_regression"
    spec.task, spec.metric = Task.TASK_REGRESSION, "neg_rmse"
    assert make_plan(spec, synthetic.schema()).candidates[0].family.name == "linear_regression"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ('{"C": 1.0, "depth": 3}', ("unknown parameter(s) depth",)),
        ('{"random_state": 3}', ("random_state cannot be set", "seed")),
        ('{"C": -1}', ("invalid parameter", "C")),
        ('{"C": ', ("not valid JSON",)),
        ("[1, 2]", ("must be a JSON object",)),
    ],
)
def test_estimator_parameters_are_checked_before_training(params: str, words: tuple[str, ...]) -> None:
    refused(synthetic.spec(params=params), "estimators[0].params_json", *words)


@pytest.mark.parametrize(
    ("space", "field", "words"),
    [
        ('{"C": {"low": 5, "high": 1}}', "estimators[0].search_space_json.C", ("must be below",)),
        ('{"C": {"low": 0, "high": 1, "log": true}}', "estimators[0].search_space_json.C", ("low > 0",)),
        ('{"C": []}', "estimators[0].search_space_json.C", ("must not be empty",)),
        ('{"C": {"low": 1, "high": 2, "step": 1}}', "estimators[0].search_space_json.C", ("step",)),
        ('{"C": 3}', "estimators[0].search_space_json.C", ("list of choices",)),
        ('{"gamma": [1, 2]}', "estimators[0].search_space_json", ("unknown parameter(s) gamma",)),
    ],
)
def test_search_spaces_are_checked(space: str, field: str, words: tuple[str, ...]) -> None:
    refused(synthetic.spec(search_space=space), field, *words)


def test_a_parameter_cannot_be_both_fixed_and_searched() -> None:
    refused(
        synthetic.spec(params='{"C": 1.0}', search_space='{"C": [0.1, 1.0]}'),
        "estimators[0].search_space_json",
        "both fixed and searched",
    )


def test_search_spaces_parse_to_distributions() -> None:
    space = '{"C": {"low": 0.01, "high": 10, "log": true}, "max_iter": {"low": 50, "high": 500, "type": "int"}, "tol": [0.001, 0.0001]}'
    candidate = make_plan(synthetic.spec(search_space=space), synthetic.schema()).candidates[0]
    assert candidate.space == {
        "C": Range(0.01, 10.0, log=True),
        "max_iter": Range(50.0, 500.0, integer=True),
        "tol": Choice((0.001, 0.0001)),
    }


@pytest.mark.parametrize(
    ("gates", "field", "words"),
    [
        (Gates(max_regression=-0.1), "gates.max_regression", ("negative",)),
        (Gates(max_slice_gap=float("nan")), "gates.max_slice_gap", ("finite",)),
        (Gates(min_metric=1.5), "gates.min_metric", ("never exceeds 1",)),
    ],
)
def test_gate_thresholds_must_make_sense(gates: Gates, field: str, words: tuple[str, ...]) -> None:
    refused(synthetic.spec(gates=gates), field, *words)


def test_time_budget_defaults_and_limits() -> None:
    limits = Limits(default_time_budget_seconds=90, max_time_budget_seconds=100)
    assert make_plan(synthetic.spec(budget=0), synthetic.schema(), limits).time_budget_seconds == 90
    with pytest.raises(SpecError, match="exceeds this trainer's limit of 100s") as caught:
        make_plan(synthetic.spec(budget=101), synthetic.schema(), limits)
    assert caught.value.field == "time_budget_seconds"
    refused(synthetic.spec(budget=-1), "time_budget_seconds")


def test_holdout_fraction_must_leave_most_rows_for_training() -> None:
    spec = synthetic.spec()
    spec.holdout_fraction = 0.7
    refused(spec, "holdout_fraction", "at most 0.5")


def test_the_spec_must_match_the_schema_it_is_checked_against() -> None:
    refused(synthetic.spec(dataset="other"), "dataset", "'other'", "'credit'")


def test_request_window_overrides_the_specs_and_inherits_its_dataset() -> None:
    spec = synthetic.spec()
    spec.window.CopyFrom(DataWindow(dataset="credit", max_rows=500))
    assert resolve_window(spec, None).max_rows == 500
    window = resolve_window(spec, DataWindow(max_rows=100))
    assert (window.dataset, window.max_rows) == ("credit", 100)
    with pytest.raises(SpecError) as caught:
        resolve_window(spec, DataWindow(dataset="other"))
    assert caught.value.field == "window.dataset"


def test_window_bounds_must_be_ordered() -> None:
    window = DataWindow()
    window.start_time.FromSeconds(200)
    window.end_time.FromSeconds(100)
    with pytest.raises(SpecError, match="before end_time"):
        resolve_window(synthetic.spec(), window)


def test_estimator_spec_family_names_are_case_and_alias_tolerant() -> None:
    spec = synthetic.spec()
    del spec.estimators[:]
    spec.estimators.extend([EstimatorSpec(family="HGB"), EstimatorSpec(family="rf")])
    assert [c.family.name for c in make_plan(spec, synthetic.schema()).candidates] == [
        "hist_gradient_boosting",
        "random_forest",
    ]
