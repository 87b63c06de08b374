"""The online flavor: river families searched and gated like the others, signed artifacts,
and online sessions that learn each streamed row once, test-then-train."""

from __future__ import annotations

import pytest

from services.common.artifacts import ArtifactError
from services.common.clients.datasets import WindowDigest
from services.common.flavors import flavor
from services.common.flavors.base import SIGNATURE_HMAC_PARAM, StoredArtifact
from services.common.flavors.river import RiverRuntime
from services.common.proto.mlops.v1.events_pb2 import TrainRequest
from services.common.proto.mlops.v1.model_pb2 import FeatureValue, Gates, MaterializedWindow, Task
from services.trainer.errors import SpecError
from services.trainer.plan import make_plan
from services.trainer.registration import version_metadata
from services.trainer.river_models import OnlineSession, RiverEstimator
from services.trainer.training import Trainer
from tests.unit.trainer import synthetic

KEY = b"k" * 32


def trained(family: str = "river_logistic_regression", rows: int = 400, **kwargs: object) -> object:
    spec = synthetic.spec(families=(family,), **kwargs)  # type: ignore[arg-type]
    return Trainer(make_plan(spec, synthetic.schema()), synthetic.rows(rows, seed=2)).run()


@pytest.mark.parametrize("family", ["river_logistic_regression", "river_hoeffding_tree"])
def test_river_classifiers_learn_and_pass_the_same_gates(family: str) -> None:
    candidate = trained(family, gates=Gates(min_metric=0.75, max_slice_gap=0.5))
    assert candidate.metrics["accuracy"] > 0.75  # type: ignore[attr-defined]
    assert candidate.gates_passed  # type: ignore[attr-defined]
    assert list(candidate.signature.classes) == ["0", "1"]  # type: ignore[attr-defined]
    assert "importance.f0" in candidate.metrics  # type: ignore[attr-defined]


def test_a_river_regressor_learns() -> None:
    spec = synthetic.spec(families=("river_linear_regression",), metric="r2")
    spec.task = Task.TASK_REGRESSION
    rows = synthetic.rows(600)
    for row in rows:
        row.label.number_value = 2 * row.features["f0"].number_value
    candidate = Trainer(make_plan(spec, synthetic.schema()), rows).run()
    assert candidate.metrics["r2"] > 0.9


def test_river_parameters_are_checked_and_object_valued_ones_refused() -> None:
    with pytest.raises(SpecError, match=r"unknown parameter\(s\) optimizer"):
        make_plan(
            synthetic.spec(families=("river_logistic_regression",), params='{"optimizer": "sgd"}'),
            synthetic.schema(),
        )
    plan = make_plan(
        synthetic.spec(families=("river_hoeffding_tree",), params='{"grace_period": 50}'), synthetic.schema()
    )
    assert plan.candidates[0].params == {"grace_period": 50}


def test_river_artifacts_are_signed_pickles_that_only_load_with_the_key() -> None:
    spec = synthetic.spec(families=("river_hoeffding_tree",))
    plan = make_plan(spec, synthetic.schema())
    candidate = Trainer(plan, synthetic.rows(300)).run()
    request = TrainRequest(request_id="r")
    with pytest.raises(SpecError, match="MLOPS_ARTIFACT_SIGNING_KEY"):
        version_metadata(
            plan=plan,
            spec=spec,
            request=request,
            candidate=candidate,
            window=MaterializedWindow(),
            code_version="x",
            parent_version=0,
        )
    described, data = version_metadata(
        plan=plan,
        spec=spec,
        request=request,
        candidate=candidate,
        window=MaterializedWindow(),
        code_version="x",
        parent_version=0,
        signing_key=KEY,
    )
    assert described.artifact.format == "river-hmac" and described.tags["flavor"] == "river-hmac"
    assert described.params[SIGNATURE_HMAC_PARAM] == described.signature_hmac
    stored = StoredArtifact(data, described.artifact.sha256, described.signature, dict(described.params))
    runtime = flavor("river-hmac").load(stored, signing_key=KEY)
    assert isinstance(runtime, RiverRuntime)
    assert set(runtime.model.predict_proba_one({"f0": 1.0, "f1": 0.0, "color": "red", "flag": 1.0})) <= {
        "0",
        "1",
    }
    with pytest.raises(ArtifactError, match="does not verify"):
        flavor("river-hmac").load(stored, signing_key=b"x" * 32)


def session(positions: dict[int, int] | None = None, floor_ns: int = 0) -> OnlineSession:
    estimator = trained().pipeline  # type: ignore[attr-defined]
    assert isinstance(estimator, RiverEstimator)
    return OnlineSession(
        model_name="m",
        version=1,
        dataset="credit",
        estimator=estimator,
        positions=positions or {0: 0, 1: 0},
        floor_ns=floor_ns,
    )


def test_a_session_learns_each_record_once_whatever_the_partition_order() -> None:
    online = session()
    rows = synthetic.rows(6, seed=9)
    # Partitions interleave: event times are not in order across them.
    assert [
        online.offer(row, partition, offset)
        for row, partition, offset in [(rows[3], 1, 0), (rows[0], 0, 0), (rows[4], 1, 1), (rows[1], 0, 1)]
    ] == [True] * 4
    assert not online.offer(rows[0], 0, 0)  # the same record again, after a rewind
    assert online.positions == {0: 2, 1: 2}
    assert online.learned == 4


def test_a_session_skips_other_datasets_unlabelled_rows_and_rows_its_version_learned() -> None:
    rows = synthetic.rows(4, seed=9)
    online = session(floor_ns=rows[1].event_time.ToNanoseconds())
    other = synthetic.rows(1, dataset="other")[0]
    unlabelled = synthetic.rows(4, seed=9)[3]
    unlabelled.ClearField("label")
    assert not online.offer(rows[0], 0, 0)  # older than the version's training window
    assert not online.offer(rows[1], 0, 1)
    assert not online.offer(other, 0, 2)
    assert not online.offer(unlabelled, 0, 3)
    assert online.offer(rows[2], 0, 4)
    assert online.positions[0] == 5 and online.learned == 1


def test_a_span_is_hashed_as_the_dataset_api_hashes_a_window() -> None:
    online = session()
    rows = synthetic.rows(30, seed=4)
    for offset, row in enumerate(reversed(rows)):
        online.offer(row, 0, offset)
    span = online.span(schema_version=1)
    expected = WindowDigest()
    for row in rows:  # window order: event time, then event id
        expected.update(row)
    assert (span.content_sha256, span.row_count) == (expected.hexdigest(), 30)
    assert span.window.start_time == rows[0].event_time and span.window.end_time == rows[-1].event_time
    scores = online.scores()
    assert 0 <= scores["accuracy"] <= 1
    online.snapshot_taken(2)
    assert online.learned == 0 and online.versions == {1, 2} and online.positions == {0: 30, 1: 0}


def test_a_class_first_seen_online_joins_the_models_classes() -> None:
    online = session()
    row = synthetic.rows(1, seed=5)[0]
    row.label.CopyFrom(FeatureValue(number_value=7))
    assert online.offer(row, 0, 0)
    assert online.estimator.classes_ is not None and list(online.estimator.classes_) == ["0", "1", "7"]
    assert online.scores()["accuracy"] == 0.0
