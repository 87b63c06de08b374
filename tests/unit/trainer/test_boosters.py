"""The booster families: XGBoost and LightGBM searched, judged and registered like the others,
stored through their own flavors, answering after the round trip exactly as they were
judged; numeric features only, their parameters checked before any time is spent."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.common.artifacts import sha256_hex
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.proto.mlops.v1.model_pb2 import Signature, Task
from services.common.proto.mlops.v1.registry_pb2 import Artifact, ModelVersion
from services.common.trials import recorded_trials
from services.trainer.boosters import LightGBMEstimator, XGBoostEstimator
from services.trainer.errors import SpecError
from services.trainer.plan import make_plan
from services.trainer.runner import load_production
from services.trainer.scoring import holdout_scores
from services.trainer.tabular import Feature, FeatureKind, feature_matrix
from tests.unit.trainer import synthetic

NUMERIC = ("f0", "f1", "flag")


def trained(families: tuple[str, ...], **kwargs: Any) -> tuple[Any, Any, Any, bytes]:
    return synthetic.trained(synthetic.spec(families=families, features=NUMERIC, **kwargs))


@pytest.mark.parametrize(("family", "package"), [("xgboost", "xgboost-cpu"), ("lightgbm", "lightgbm")])
def test_a_booster_family_is_stored_by_its_flavor_and_serves_what_was_judged(
    family: str, package: str
) -> None:
    plan, candidate, described, artifact = trained((family,), params='{"n_estimators": 30}')
    assert described.artifact.format == family and described.tags["flavor"] == family
    assert described.lineage.package_versions[package] != "absent"
    assert list(described.signature.classes) == ["0", "1"] and described.signature.inputs[0].allow_nan
    assert {f.name for f in described.reference_profile.features} == set(NUMERIC)
    assert any(name.startswith("importance.") for name in described.metrics)
    assert [g.name for g in described.gates] == [g.name for g in candidate.gates]

    # What serving builds from the artifact, with the version's signature, answers as judged.
    loaded = flavor(family).load(StoredArtifact(artifact, described.artifact.sha256, described.signature))
    matrix = feature_matrix(synthetic.rows(40, seed=99), plan.features)
    np.testing.assert_array_equal(loaded.predict_proba(matrix), candidate.pipeline.predict_proba(matrix))
    assert loaded.positional_classes and list(described.signature.classes) == list(
        candidate.pipeline.classes_
    )
    rows = synthetic.rows(60, seed=98)
    truth = np.array([str(int(r.label.number_value)) for r in rows], dtype=object)
    assert (candidate.pipeline.predict(feature_matrix(rows, plan.features)) == truth).mean() > 0.6


def test_the_search_picks_among_booster_and_other_families_and_records_every_trial() -> None:
    _, candidate, described, _ = trained(("xgboost", "lightgbm", "logistic_regression"), budget=120.0)
    trials = recorded_trials(described.params)
    assert {t["family"] for t in trials} == {"xgboost", "lightgbm", "logistic_regression"}
    winner = described.params["family"]
    assert described.artifact.format == {"xgboost": "xgboost", "lightgbm": "lightgbm"}.get(winner, "skops")
    top = max(t["rung"] for t in trials)
    best = [t for t in trials if t["rung"] == top and t["family"] == winner]
    assert best, "the winner is among the last rung's trials"


@pytest.mark.parametrize("cls", [XGBoostEstimator, LightGBMEstimator])
def test_labels_are_trained_on_their_sorted_positions_and_named_back(cls: type[Any]) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2))
    labels = np.where(X[:, 0] > 0, "zeta", "alpha").astype(object)
    features = (Feature("a", FeatureKind.NUMERIC), Feature("b", FeatureKind.NUMERIC))
    model = cls(Task.TASK_CLASSIFICATION, {"n_estimators": 10}, seed=1).with_features(features).fit(X, labels)
    assert list(model.classes_) == ["alpha", "zeta"]
    assert (model.predict(X) == labels).mean() > 0.95
    saved = flavor(cls.flavor).save(model).data
    assert flavor(cls.flavor).infer_signature(saved).feature_names == ("a", "b"), (
        "the artifact names its features"
    )


def test_a_booster_family_refuses_categorical_features_at_planning() -> None:
    spec = synthetic.spec(families=("logistic_regression", "xgboost"))  # the default features include color
    with pytest.raises(SpecError, match="takes numeric features only .* color is categorical") as refused:
        make_plan(spec, synthetic.schema())
    assert refused.value.field == "estimators[1].family"


@pytest.mark.parametrize(
    ("family", "params", "words"),
    [
        ("xgboost", '{"max_depth": -1}', "invalid parameter for xgboost"),
        ("lightgbm", '{"num_leaves": 1}', "invalid parameter for lightgbm"),
        ("xgboost", '{"objective": "reg:squarederror"}', "unknown parameter(s) objective"),
        ("lightgbm", '{"n_jobs": 4}', "n_jobs cannot be set"),
    ],
)
def test_booster_parameters_are_checked_before_training(family: str, params: str, words: str) -> None:
    spec = synthetic.spec(families=(family,), params=params, features=NUMERIC)
    with pytest.raises(SpecError) as refused:
        make_plan(spec, synthetic.schema())
    assert words in str(refused.value) and refused.value.field == "estimators[0].params_json"


def test_a_booster_regressor_predicts_values() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    y = 2 * X[:, 0] - X[:, 1]
    for cls in (XGBoostEstimator, LightGBMEstimator):
        model = cls(Task.TASK_REGRESSION, {"n_estimators": 50}).fit(X, y)
        assert model.classes_ is None and np.corrcoef(model.predict(X), y)[0, 1] > 0.9


def test_a_booster_in_production_is_scored_by_the_labels_its_signature_names() -> None:
    """The challenger gate scores production on the holdout's labels: a booster's positions are
    named by its version's signature, or every row would count as wrong."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2))
    labels = np.where(X[:, 0] > 0, "yes", "no").astype(object)
    model = XGBoostEstimator(Task.TASK_CLASSIFICATION, {"n_estimators": 10}).fit(X, labels)
    data = flavor("xgboost").save(model).data
    version = ModelVersion(
        artifact=Artifact(format="xgboost", sha256=sha256_hex(data)),
        signature=Signature(classes=["no", "yes"], task=Task.TASK_CLASSIFICATION),
    )
    production = load_production(version, data, signing_key=None)
    assert list(production.classes_) == ["no", "yes"]
    assert holdout_scores(production, X, labels, Task.TASK_CLASSIFICATION)["accuracy"] > 0.95
