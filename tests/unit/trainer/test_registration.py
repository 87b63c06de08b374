"""What the registry receives: a verifiable artifact, full lineage, the search's trials,
and the spec that reproduces the version."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, MaterializedWindow
from services.common.trials import recorded_trials
from services.trainer.plan import make_plan
from services.trainer.registration import (
    json_chunks,
    package_versions,
    trigger_name,
    version_metadata,
)
from services.trainer.tabular import feature_matrix
from services.trainer.training import Trainer
from tests.unit.trainer import synthetic


@pytest.fixture(scope="module")
def registered() -> tuple[Any, Any, bytes]:
    spec = synthetic.spec(families=("logistic_regression", "random_forest"))
    spec.estimators[0].search_space_json = '{"C": [0.1, 1.0, 10.0]}'
    spec.estimators[1].params_json = '{"n_estimators": 20}'
    plan = make_plan(spec, synthetic.schema())
    rows = synthetic.rows(300)
    candidate = Trainer(plan, rows).run()
    request = TrainRequest(
        request_id="r-1",
        model_name=spec.model_name,
        trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT,
        drift_event_id="d-9",
    )
    window = MaterializedWindow(
        window=DataWindow(dataset="credit"), content_sha256="ab" * 32, row_count=300, schema_version=1
    )
    described, artifact = version_metadata(
        plan=plan,
        spec=spec,
        request=request,
        candidate=candidate,
        window=window,
        code_version="abc123",
        parent_version=4,
    )
    return candidate, described, artifact


def test_the_artifact_is_described_by_its_digest_and_loads_as_trained(
    registered: tuple[Any, Any, bytes],
) -> None:
    candidate, described, artifact = registered
    assert described.artifact.format == "skops"
    assert described.artifact.size_bytes == len(artifact)
    model = flavor("skops").load(StoredArtifact(artifact, described.artifact.sha256))
    features = make_plan(synthetic.spec(), synthetic.schema()).features
    matrix = feature_matrix(synthetic.rows(5, seed=99), features)
    np.testing.assert_array_equal(model.predict_proba(matrix), candidate.pipeline.predict_proba(matrix))


def test_lineage_names_the_data_code_packages_parent_and_cause(registered: tuple[Any, Any, bytes]) -> None:
    _, described, _ = registered
    lineage = described.lineage
    assert lineage.data.content_sha256 == "ab" * 32 and lineage.data.row_count == 300
    assert lineage.code_version == "abc123"
    assert lineage.parent_version == 4
    assert (lineage.train_request_id, lineage.trigger, lineage.drift_event_id) == ("r-1", "drift", "d-9")
    assert {"scikit-learn", "numpy", "scipy", "river", "skops", "python"} <= set(lineage.package_versions)
    assert lineage.package_versions["scikit-learn"] == package_versions()["scikit-learn"] != "absent"


def test_params_hold_the_winner_and_every_trial(registered: tuple[Any, Any, bytes]) -> None:
    candidate, described, _ = registered
    params = described.params
    assert params["family"] == candidate.configuration.family.name
    assert params["seed"] == "7" and params["metric"] == "accuracy"
    trials = recorded_trials(params)
    assert len(trials) == len(candidate.trials) == described.metrics["search.trials"]
    assert {t["family"] for t in trials} == {"logistic_regression", "random_forest"}
    assert all({"score", "rows", "rung", "params", "seconds"} <= set(t) for t in trials)
    assert params["search.truncated"] == "false"
    assert json.loads(params["features"]) == ["f0", "f1", "color", "flag"]
    assert json.loads(params["feature_kinds"])["color"] == "categorical"


def test_metadata_carries_gates_signature_and_the_spec(registered: tuple[Any, Any, bytes]) -> None:
    candidate, described, _ = registered
    assert described.gates_passed == candidate.gates_passed
    assert list(described.signature.feature_names) == ["f0", "f1", "color", "flag"]
    assert described.spec.model_name == "credit-model" and described.spec.seed == 7
    assert described.metrics["accuracy"] == candidate.metrics["accuracy"]
    assert described.tags["flavor"] == "skops"


def test_trigger_names_are_lowercase_words() -> None:
    assert trigger_name(TrainTrigger.TRAIN_TRIGGER_MANUAL) == "manual"
    assert trigger_name(TrainTrigger.TRAIN_TRIGGER_UNSPECIFIED) == "unspecified"


def test_long_trial_lists_are_split_under_the_registrys_value_limit() -> None:
    records = [
        {
            "configuration": i,
            "family": "random_forest",
            "params": {"n": "x" * 50},
            "rung": 0,
            "rows": 10,
            "score": 0.5,
        }
        for i in range(200)
    ]
    parts = json_chunks(records, 4096)
    assert len(parts) > 1 and all(len(p) <= 4096 for p in parts)
    params = {f"search.trials.{i:03d}": part for i, part in enumerate(parts)}
    assert recorded_trials(params) == records
    huge = [
        {"configuration": 0, "family": "f", "params": {"p": "y" * 5000}, "rung": 0, "rows": 1, "score": None}
    ]
    assert json_chunks(huge, 4096) == [
        '[{"configuration": 0, "family": "f", "rung": 0, "rows": 1, "score": null}]'
    ]
