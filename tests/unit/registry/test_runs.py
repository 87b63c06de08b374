"""Runs folded from the trainer's results: idempotent under redelivery, never back to
running once finished, progress only growing, a final result alone enough, duplicates
attached to the run their idempotency key names."""

from __future__ import annotations

import doctest

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument
from services.common.proto.mlops.v1.events_pb2 import SearchTrial, TrainResult, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import GateResult
from services.common.proto.mlops.v1.runs_pb2 import RunState
from services.registry import runs
from services.registry.runs import check_result, coalesce, fold


def result(status: TrainStatus.ValueType, at: int, **fields: object) -> TrainResult:
    message = TrainResult(request_id="r1", model_name="churn", status=status, idempotency_key="k1", **fields)  # type: ignore[arg-type]
    message.occurred_at.CopyFrom(Timestamp(seconds=at))
    return message


def test_the_examples_in_the_docstring_run() -> None:
    assert doctest.testmod(runs).failed == 0


def test_a_job_is_folded_from_start_to_finish() -> None:
    started = fold(
        None,
        result(
            TrainStatus.TRAIN_STATUS_STARTED,
            100,
            trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT,
            requested_by="monitor",
        ),
    )
    assert started is not None and started.started_at.seconds == 100
    assert (started.trigger, started.requested_by, started.idempotency_key) == (
        TrainTrigger.TRAIN_TRIGGER_DRIFT,
        "monitor",
        "k1",
    )
    halfway = fold(started, result(TrainStatus.TRAIN_STATUS_PROGRESS, 110, progress=0.5, dataset="credit"))
    assert halfway is not None and (halfway.progress, halfway.dataset) == (0.5, "credit")
    assert fold(halfway, result(TrainStatus.TRAIN_STATUS_PROGRESS, 105, progress=0.3)).progress == 0.5  # type: ignore[union-attr]

    final = result(
        TrainStatus.TRAIN_STATUS_GATES_FAILED,
        130,
        version=3,
        family="xgboost",
        params_json='{"max_depth": 4}',
        error="gates failed: challenger",
        duration_seconds=30.0,
        gates=[GateResult(name="challenger", passed=False, value=0.8, threshold=0.82)],
        trials=[SearchTrial(configuration=0, family="xgboost", rung=0, rows=100, score=0.8)],
        metrics={"accuracy": 0.8},
    )
    finished = fold(halfway, final)
    assert finished is not None and finished.state == RunState.RUN_STATE_GATES_FAILED
    assert (finished.version, finished.family, finished.progress, finished.finished_at.seconds) == (
        3,
        "xgboost",
        1.0,
        130,
    )
    assert finished.started_at.seconds == 100 and finished.dataset == "credit"
    assert [t.family for t in finished.trials] == ["xgboost"] and finished.metrics["accuracy"] == 0.8

    assert fold(finished, final) is None, "the same final result again changes nothing"
    assert fold(finished, result(TrainStatus.TRAIN_STATUS_PROGRESS, 140, progress=0.9)) is None
    assert fold(finished, result(TrainStatus.TRAIN_STATUS_STARTED, 150)) is None


def test_a_final_result_alone_makes_a_finished_run() -> None:
    failed = fold(
        None,
        result(TrainStatus.TRAIN_STATUS_FAILED, 200, duration_seconds=12.5, error="data: window too small"),
    )
    assert failed is not None and failed.state == RunState.RUN_STATE_FAILED
    assert failed.started_at.ToNanoseconds() == 200 * 10**9 - int(12.5e9)
    assert fold(None, result(TrainStatus.TRAIN_STATUS_UNSPECIFIED, 1)) is None


def test_duplicates_join_the_run_they_were_answered_by() -> None:
    run = fold(None, result(TrainStatus.TRAIN_STATUS_REGISTERED, 10, version=1))
    assert run is not None
    duplicate = result(TrainStatus.TRAIN_STATUS_DUPLICATE, 20)
    duplicate.request_id = "r2"
    joined = coalesce(run, duplicate)
    assert joined is not None and list(joined.coalesced_request_ids) == ["r2"]
    assert coalesce(joined, duplicate) is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model_name": "bad/name"}, "model_name"),
        ({"request_id": ""}, "request_id"),
        ({"idempotency_key": "k" * 300}, "idempotency_key"),
    ],
)
def test_results_that_cannot_be_runs_are_refused_naming_the_field(fields: dict[str, str], field: str) -> None:
    bad = result(TrainStatus.TRAIN_STATUS_STARTED, 1)
    for name, value in fields.items():
        setattr(bad, name, value)
    with pytest.raises(InvalidArgument) as refused:
        check_result(bad)
    assert refused.value.field == field
