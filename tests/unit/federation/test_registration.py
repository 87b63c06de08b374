"""What the registry stores with a federated version: servable, gated, with lineage and no rows."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.federation.protocol import architecture
from services.federation.registration import Trigger, artifact, gates, platform_spec, version_metadata
from services.federation.spec import FederationSpec
from services.federation.status import Round, RunStatus, Site
from services.serving.predictor import Predictor
from tests.helpers.artifacts import opened

SPEC = FederationSpec.parse(
    {
        "model_name": "clinics",
        "features": ["age", "pressure", "weight"],
        "target": "outcome",
        "classes": ["0", "1"],
        "strategy": {"name": "fedprox", "rounds": 3},
        "gates": {"min_metric": 0.7, "max_regression": 0.02},
    }
)
PARAMETERS = [np.array([[0.5, -1.0, 2.0]]), np.array([0.1])]


def site_results(*accuracies: float) -> dict[str, dict[str, Any]]:
    return {f"site-{i}": {"accuracy": a, "loss": 0.3, "rows": 100} for i, a in enumerate(accuracies)}


def finished_status(evaluation: dict[str, Any]) -> RunStatus:
    status = RunStatus(model_name="clinics", state="finished", epsilon=4.25, delta=1e-5)
    status.sites = {str(n): Site(name=f"site-{n}", train_rows=400 + n) for n in range(3)}
    status.sites["9"] = Site(name="late", refused="did not answer the first query in time")
    status.rounds = [
        Round(1, aggregated=["site-0", "site-1", "site-2"], applied=True),
        Round(2, aggregated=["site-0", "site-1"], dropped=["site-2"], applied=True),
        Round(3, aggregated=["site-0"], applied=False),
    ]
    status.evaluation = evaluation
    return status


def test_the_artifact_loads_under_the_platforms_trusted_types_and_predicts_the_arrays() -> None:
    data, _ = artifact(SPEC, PARAMETERS)
    model = opened("skops", data)
    rows = np.array([[1.0, 0.5, 0.25], [-2.0, 1.0, 0.0]])
    logits = rows @ PARAMETERS[0].T + PARAMETERS[1]
    np.testing.assert_allclose(model.predict_proba(rows)[:, 1], 1 / (1 + np.exp(-logits.ravel())))


def test_serving_accepts_the_version_as_registered() -> None:
    data, estimator = artifact(SPEC, PARAMETERS)
    meta = version_metadata(
        spec=SPEC,
        status=finished_status({"accuracy": 0.8, "loss": 0.4, "sites": site_results(0.8, 0.8, 0.8)}),
        data=data,
        classes=[str(c) for c in estimator.classes_],
        parent_version=0,
        trigger=Trigger("req-1"),
        code_version="abc",
        run_id=42,
    )
    message = json_format.ParseDict(meta, registry_pb2.VersionMetadata())
    # Loaded as serving loads it: through the skops flavor, under the version's signature.
    predictor = Predictor("clinics", 1, opened("skops", data, message.signature), message.signature)
    assert predictor.matrix_input is not None and predictor.matrix_input.shape == (-1, 3)
    assert predictor.classes == ("0", "1")
    assert message.spec.training == model_pb2.TRAINING_FEDERATED


def test_lineage_names_sites_rounds_strategy_and_budget_and_no_row() -> None:
    data, estimator = artifact(SPEC, PARAMETERS)
    meta = version_metadata(
        spec=SPEC,
        status=finished_status({"accuracy": 0.8, "loss": 0.4, "sites": site_results(0.9, 0.8, 0.7)}),
        data=data,
        classes=["0", "1"],
        parent_version=4,
        trigger=Trigger("req-7", kind="drift", drift_event_id="drift-3"),
        code_version="abc",
        run_id=42,
    )
    params, metrics, lineage = meta["params"], meta["metrics"], meta["lineage"]
    assert json.loads(params["federation.sites"]) == ["site-0", "site-1", "site-2"]
    assert params["federation.rounds_applied"] == "2" and params["federation.strategy"] == "fedprox"
    assert params["privacy.epsilon"] == "4.25" and metrics["privacy.epsilon"] == 4.25
    assert metrics["privacy.delta"] == 1e-5
    assert metrics["site.site-0.accuracy"] == 0.9
    assert lineage["trigger"] == "drift" and lineage["drift_event_id"] == "drift-3"
    assert lineage["parent_version"] == 4
    assert lineage["data"] == {"window": {"dataset": "clinics-sites"}, "row_count": 400 + 401 + 402}
    assert json.loads(params["federation.site_train_rows"]) == {"site-0": 400, "site-1": 401, "site-2": 402}
    # Nothing but aggregates: no list in the record is as long as a site's rows.
    longest = max(len(v) for v in _lists(meta))
    assert longest <= len(SPEC.features)


def _lists(value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _lists(v)]
    if isinstance(value, list):
        return [value, *(x for v in value for x in _lists(v))]
    if isinstance(value, str) and value.startswith("["):
        return _lists(json.loads(value))
    return []


@pytest.mark.parametrize(
    ("evaluation", "parent", "expected"),
    [
        ({"accuracy": 0.8, "sites": site_results(0.8)}, 0, {"min_metric": True}),
        ({"accuracy": 0.6, "sites": site_results(0.6)}, 0, {"min_metric": False}),
        (
            {"accuracy": 0.8, "sites": site_results(0.8, 0.8), "parent": {"sites": site_results(0.81, 0.81)}},
            3,
            {"min_metric": True, "challenger": True},
        ),
        (
            {"accuracy": 0.8, "sites": site_results(0.8, 0.8), "parent": {"sites": site_results(0.9, 0.9)}},
            3,
            {"min_metric": True, "challenger": False},
        ),
        ({"holdout_accuracy": 0.65, "accuracy": 0.95, "sites": {}}, 0, {"min_metric": False}),
        ({}, 0, {"min_metric": False}),
    ],
)
def test_gates_are_judged_on_the_sites_rows(
    evaluation: dict[str, Any], parent: int, expected: dict[str, bool]
) -> None:
    assert {g["name"]: g["passed"] for g in gates(SPEC, evaluation, parent)} == expected


def test_the_challenger_compares_on_the_sites_both_models_were_scored_by() -> None:
    evaluation = {
        "accuracy": 0.85,
        "sites": site_results(0.85, 0.85),
        "parent": {"sites": {**site_results(0.86), "gone": {"accuracy": 0.1, "loss": 1.0, "rows": 1000}}},
    }
    (_, challenger) = gates(SPEC, evaluation, 2)
    assert challenger["value"] == pytest.approx(-0.01)
    assert "site-0" in challenger["detail"] and "gone" not in challenger["detail"]


def test_the_platform_spec_routes_requests_to_the_federation() -> None:
    spec = json_format.ParseDict(platform_spec(SPEC), model_pb2.ModelSpec())
    assert spec.training == model_pb2.TRAINING_FEDERATED
    assert list(spec.features) == list(SPEC.features)
    assert architecture(SPEC).shapes() == [(1, 3), (1,)]
