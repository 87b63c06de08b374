"""What the pages compute from the platform's answers: comparisons, charts, jobs, lineage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult, TrainStatus, TrainTrigger
from services.console import charts, compare, lineage
from services.console.jobs import Jobs
from services.console.routes.actions import offered
from services.console.routes.monitoring import episodes
from services.console.routes.sign_in import safe_next
from services.console.session import Identity


def version(number: int, *, content: str = "ab" * 32, **fields: object) -> registry_pb2.ModelVersion:
    found = registry_pb2.ModelVersion(model_name="churn", version=number, **fields)  # type: ignore[arg-type]
    found.lineage.data.content_sha256 = content
    return found


def test_comparing_versions_names_what_only_one_has_and_whether_the_data_is_the_same() -> None:
    a = version(1, metrics={"accuracy": 0.8}, params={"C": "1", "search.trials.000": "[{}]"})
    b = version(
        2,
        content="cd" * 32,
        metrics={"accuracy": 0.85, "auc": 0.9},
        params={"C": "2"},
        gates=[model_pb2.GateResult(name="challenger", passed=False, value=0.01, threshold=0.02)],
    )
    result = compare.compare(a, b)
    assert [(m.name, m.a, m.b) for m in result.metrics] == [("accuracy", 0.8, 0.85), ("auc", None, 0.9)]
    assert result.metrics[1].delta is None
    (gate,) = result.gates
    assert gate.a is None and gate.b is not None and gate.b.margin == pytest.approx(-0.01)
    assert [(p.name, p.differs) for p in result.params] == [("C", True)]  # trial records left out
    assert not result.same_data
    assert next(r for r in result.data if r.name == "content hash").differs
    assert not compare.compare(version(1, content=""), version(2, content="")).same_data


def test_the_quality_chart_draws_mean_absolute_error_for_regressors_and_marks_every_event() -> None:
    timeline = {
        "versions": {
            "2": [{"at": 20.0, "mean_absolute_error": 1.5}],
            "10": [{"at": 30.0, "mean_absolute_error": 2.0}],
        },
        "drifts": [
            {
                "version": 2,
                "kind": "data",
                "feature": "f3",
                "detected_at": 25.0,
                "statistic": 4.0,
                "reference_statistic": 1.0,
            }
        ],
        "retrains": [{"requested_at": 26.0, "parent_version": 2}],
        "live_changes": [
            {"at": 20.0, "version": 2, "previous_version": None},
            {"at": 30.0, "version": 10, "previous_version": 2},
        ],
    }
    chart = charts.quality_chart({"versions": [{"task": "regression"}]}, timeline)
    assert chart["y_label"] == "mean absolute error"
    assert [s["label"] for s in chart["series"]] == [
        "v2 mean absolute error",
        "v10 mean absolute error",
    ]  # by number
    assert chart["data"] == [[20.0, 30.0], [1.5, None], [None, 2.0]]
    assert [(e["at"], e["kind"]) for e in chart["events"]] == [
        (25.0, "data"),
        (26.0, "retrain"),
        (30.0, "live"),
    ]
    assert "(f3)" in chart["events"][0]["label"]


def test_quality_buckets_cover_the_range_without_gaps() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    for name, (span, count) in charts.RANGES.items():
        bounds = charts.buckets(name, now)
        assert len(bounds) == count and bounds[-1].end == now and bounds[0].start == now - span
        assert all(a.end == b.start for a, b in zip(bounds, bounds[1:], strict=False))
    with pytest.raises(KeyError):
        charts.buckets("1y", now)


def test_jobs_come_from_requests_and_results_in_any_order_and_stay_bounded() -> None:
    jobs = Jobs(kept=3)
    jobs.result(TrainResult(request_id="r1", model_name="churn", status=TrainStatus.TRAIN_STATUS_STARTED))
    jobs.request(
        TrainRequest(
            request_id="r1",
            model_name="churn",
            trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT,
            idempotency_key="drift:churn:e1",
            requested_by="service:monitor",
        )
    )
    job = jobs.get("r1")
    assert job is not None and job.status == "STARTED" and job.trigger == "drift"
    jobs.result(
        TrainResult(
            request_id="r1",
            status=TrainStatus.TRAIN_STATUS_GATES_FAILED,
            version=4,
            gates=[model_pb2.GateResult(name="min_metric", passed=False)],
            error="",
        )
    )
    assert jobs.by_idempotency_key("drift:churn:e1")[0].gates[0]["name"] == "min_metric"
    assert jobs.by_idempotency_key("") == []
    for i in range(5):
        jobs.request(TrainRequest(request_id=f"n{i}", model_name="other"))
    assert len(jobs.newest()) == 3 and jobs.get("r1") is None
    assert {j.request_id for j in jobs.newest("other")} == {"n2", "n3", "n4"}


def test_a_retrain_episode_says_what_became_of_it() -> None:
    jobs = Jobs(kept=10)
    timeline = {"retrains": [{"idempotency_key": "k1", "requested_at": 1.0, "parent_version": 1}]}
    assert episodes(timeline, jobs.by_idempotency_key, 1)[0]["outcome"] == "waiting for a trainer"
    jobs.request(TrainRequest(request_id="r", model_name="m", idempotency_key="k1"))
    assert episodes(timeline, jobs.by_idempotency_key, 1)[0]["outcome"] == "waiting for a trainer"
    jobs.result(TrainResult(request_id="r", status=TrainStatus.TRAIN_STATUS_PROGRESS, progress=0.3))
    assert episodes(timeline, jobs.by_idempotency_key, 1)[0]["outcome"] == "training"
    jobs.result(TrainResult(request_id="r", status=TrainStatus.TRAIN_STATUS_REGISTERED, version=2))
    assert episodes(timeline, jobs.by_idempotency_key, 1)[0]["outcome"] == "v2 registered, not live"
    assert episodes(timeline, jobs.by_idempotency_key, 2)[0]["outcome"] == "v2 trained and live"


def test_actions_follow_the_versions_state_and_the_tokens_claims() -> None:
    everything = Identity("root", frozenset({"admin"}), None)
    ready = registry_pb2.ModelVersion(version=3, status=registry_pb2.VERSION_STATUS_READY)
    assert offered({"production": 2}, ready, everything) == ["promote", "archive"]
    assert offered({"production": 2, "candidate": 3}, ready, everything) == ["promote"]  # aliased: no archive
    archived = registry_pb2.ModelVersion(version=1, status=registry_pb2.VERSION_STATUS_ARCHIVED)
    assert offered({"production": 2}, archived, everything) == []
    failed = registry_pb2.ModelVersion(version=4, status=registry_pb2.VERSION_STATUS_GATES_FAILED)
    assert offered({}, failed, Identity("w", frozenset({"write"}), None)) == ["archive"]
    assert offered({"production": 2}, ready, Identity("r", frozenset({"read"}), None)) == []


def test_after_sign_in_only_paths_on_this_site() -> None:
    assert safe_next("/monitoring/churn") == "/monitoring/churn"
    for elsewhere in (
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "",
    ):
        assert safe_next(elsewhere) == "/models"


def test_the_lineage_graph_counts_what_it_leaves_out() -> None:
    me = version(9, lineage=model_pb2.Lineage(parent_version=8))
    me.lineage.data.content_sha256 = "ab" * 32
    answer = registry_pb2.LineageResponse(
        version=me,
        ancestors=[version(n) for n in range(8, 0, -1)] + [version(0)],
        children=[version(10 + n) for n in range(lineage.MAX_SHOWN + 2)],
    )
    graph = lineage.build(answer)
    assert graph.hidden == {"ancestors": 1, "children": 2, "same data": 0}
    assert len([n for n in graph.nodes if n.kind == "version"]) == 2 * lineage.MAX_SHOWN
    assert graph.width >= max(n.x for n in graph.nodes) + lineage.NODE_WIDTH
    assert all(edge.x1 >= 0 and edge.y1 >= 0 for edge in graph.edges)
