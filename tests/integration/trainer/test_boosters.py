"""XGBoost and LightGBM in the trainer's search, through real ingest and a real registry: the
winner is registered through its own flavor with the lineage, importances and reference
profile every version carries, and a retrain measures its challenger against it."""

from __future__ import annotations

import math

import numpy as np

from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, Gates
from services.common.trials import recorded_trials
from services.trainer.tabular import Feature, FeatureKind, feature_matrix
from tests.integration.trainer.conftest import Platform
from tests.unit.trainer import synthetic

NUMERIC = ("f0", "f1", "flag")


async def test_the_search_picks_a_booster_and_registers_it_through_its_flavor(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 500)
    spec = synthetic.spec(
        model,
        dataset=dataset,
        families=("xgboost", "lightgbm"),
        features=NUMERIC,
        gates=Gates(min_metric=0.6),
    )
    for estimator in spec.estimators:
        estimator.params_json = '{"n_estimators": 40}'
    spec.window.CopyFrom(DataWindow(dataset=dataset, max_rows=400))
    result = await platform.results.final(
        await platform.request(
            TrainRequest(model_name=model, spec=spec, trigger=TrainTrigger.TRAIN_TRIGGER_INITIAL)
        )
    )
    assert result.status == TrainStatus.TRAIN_STATUS_REGISTERED, result.error

    version = await platform.registry.get_version(model, alias="production")
    family = version.params["family"]
    assert family in ("xgboost", "lightgbm")
    assert version.artifact.format == family and version.tags["flavor"] == family
    assert {t["family"] for t in recorded_trials(version.params)} == {"xgboost", "lightgbm"}
    package = "xgboost-cpu" if family == "xgboost" else "lightgbm"
    assert version.lineage.package_versions[package] not in ("", "absent")
    assert version.lineage.data.row_count == 400
    assert {f.name for f in version.reference_profile.features} == set(NUMERIC)
    assert {f"importance.{name}" for name in NUMERIC} <= set(version.metrics)

    _, artifact = await platform.registry.download_artifact(model, version.version)
    loaded = flavor(version.artifact.format).load(StoredArtifact.of(version, artifact))
    rows = synthetic.rows(60, seed=77)
    predicted = loaded.predict(feature_matrix(rows, [Feature(n, FeatureKind.NUMERIC) for n in NUMERIC]))
    truth = np.array([int(r.label.number_value) for r in rows])
    assert (predicted.astype(int) == truth).mean() > 0.6, "positions 0 and 1 are the labels 0 and 1 here"

    retrain = await platform.results.final(
        await platform.request(TrainRequest(model_name=model, trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT))
    )
    assert retrain.status in (TrainStatus.TRAIN_STATUS_REGISTERED, TrainStatus.TRAIN_STATUS_GATES_FAILED)
    challenger = next(g for g in retrain.gates if g.name == "challenger")
    assert math.isfinite(challenger.value) and "cannot be scored" not in challenger.detail, challenger
