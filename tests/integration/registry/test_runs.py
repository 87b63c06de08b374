"""Training runs as the registry records them from the trainer's results topic: results
published while no registry ran become runs once one starts (a failed job with its trials,
a registered one with the request coalesced into it), readable over gRPC, REST and the CLI;
a record that is not a result goes to the dead-letter topic; redeliveries change nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from services.common.auth import Scope
from services.common.clients.runs import RunClient
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.events import OutgoingRecord, Topics, encode
from services.common.kafka import DLQ_ERROR_CLASS, create_producer, ensure_topics, publish
from services.common.proto.mlops.v1.events_pb2 import SearchTrial, TrainResult, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import GateResult
from services.common.proto.mlops.v1.runs_pb2 import RUN_STATE_FAILED, RUN_STATE_REGISTERED, Run
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.apps import started
from tests.helpers.cli import Cli
from tests.helpers.kafka import TopicReader
from tests.helpers.waiting import eventually
from tests.integration.registry.conftest import settings_for


def results(model: str) -> list[TrainResult]:
    """A failed job (r1, with the trials it ran) and a registered one (r2), then a request
    coalesced into r2 (r3), and r1's STARTED delivered again after it finished."""

    def result(request_id: str, status: TrainStatus.ValueType, **fields: object) -> TrainResult:
        message = TrainResult(request_id=request_id, model_name=model, status=status, **fields)  # type: ignore[arg-type]
        message.occurred_at.GetCurrentTime()
        return message

    trial = SearchTrial(configuration=0, family="xgboost", params_json="{}", rung=0, rows=90, score=0.71)
    broken = SearchTrial(configuration=1, family="lightgbm", rung=0, rows=90, error="LightGBMError: bad")
    return [
        result(
            "r1",
            TrainStatus.TRAIN_STATUS_STARTED,
            trigger=TrainTrigger.TRAIN_TRIGGER_DRIFT,
            requested_by="monitor",
        ),
        result("r1", TrainStatus.TRAIN_STATUS_PROGRESS, progress=0.4),
        result(
            "r1",
            TrainStatus.TRAIN_STATUS_FAILED,
            error="budget_exceeded: the search's time ran out",
            dataset="credit",
            trials=[trial, broken],
            duration_seconds=61.0,
        ),
        result("r2", TrainStatus.TRAIN_STATUS_STARTED, idempotency_key="nightly-1"),
        result(
            "r2",
            TrainStatus.TRAIN_STATUS_REGISTERED,
            idempotency_key="nightly-1",
            version=4,
            family="xgboost",
            params_json='{"max_depth": 4}',
            metrics={"accuracy": 0.91},
            gates=[GateResult(name="min_metric", passed=True, value=0.91, threshold=0.8)],
        ),
        result("r3", TrainStatus.TRAIN_STATUS_DUPLICATE, idempotency_key="nightly-1", version=4),
        result("r1", TrainStatus.TRAIN_STATUS_STARTED),
    ]


async def test_results_on_the_topic_become_runs_readable_everywhere(infra: Infra, tmp_path: Path) -> None:
    prefix = "runs" + uuid.uuid4().hex[:8]
    topic = Topics(prefix).train_results
    model = f"credit-{uuid.uuid4().hex[:6]}"
    await ensure_topics(infra.kafka_bootstrap, [topic])
    producer = create_producer(infra.kafka_bootstrap, "runs-test", linger_ms=1)
    await producer.start()
    try:
        # The trainer's results, while no registry runs; and one record that is not a result.
        await publish(
            producer, [encode(topic, r, source="/mlops/trainer", key=model) for r in results(model)]
        )
        await publish(producer, [OutgoingRecord(topic=topic, value=b"not an envelope", key=model.encode())])
    finally:
        await producer.stop()

    async with (
        started(RegistryApp(settings_for(infra, prefix))) as app,
        RunClient(f"127.0.0.1:{app.grpc_port}", lambda: infra.token(Scope.READ)) as runs,
        TopicReader(infra.kafka_bootstrap, Topics.dlq(topic)) as dead,
    ):

        async def both() -> list[Run]:
            return await runs.list_runs(model)

        listed = await eventually(
            both,
            lambda found: (
                {r.run_id: r.state for r in found} == {"r1": RUN_STATE_FAILED, "r2": RUN_STATE_REGISTERED}
            ),
            within=60,
        )
        assert [r.run_id for r in listed] == ["r2", "r1"], "newest first"

        failed = await runs.get_run("r1")
        assert failed.error.startswith("budget_exceeded") and failed.dataset == "credit"
        assert failed.trigger == TrainTrigger.TRAIN_TRIGGER_DRIFT and failed.requested_by == "monitor"
        assert [(t.family, t.HasField("score")) for t in failed.trials] == [
            ("xgboost", True),
            ("lightgbm", False),
        ]
        assert failed.progress == 1.0, "the late STARTED did not reopen it"
        registered = await runs.get_run("r3")  # the coalesced request finds the run that answered it
        assert registered.run_id == "r2" and list(registered.coalesced_request_ids) == ["r3"]
        assert (registered.version, registered.family, registered.metrics["accuracy"]) == (4, "xgboost", 0.91)
        assert [r.run_id for r in await runs.list_runs(model, state=RUN_STATE_FAILED)] == ["r1"]
        with pytest.raises(NotFound):
            await runs.get_run("nobody")

        refused = await dead.wait_until(lambda records: len(records) >= 1)
        assert dict(refused[0].headers)[DLQ_ERROR_CLASS] == b"not_cloudevent"

        # REST, the same runs and the same errors.
        headers = {"authorization": f"Bearer {infra.token(Scope.READ)}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", headers=headers) as http:
            page = (
                await http.get("/v1/runs", params={"model_name": model, "state": "RUN_STATE_REGISTERED"})
            ).json()
            assert [r["run_id"] for r in page["runs"]] == ["r2"] and page["runs"][0]["version"] == 4
            one = (await http.get("/v1/runs/r1")).json()
            assert one["state"] == "RUN_STATE_FAILED" and len(one["trials"]) == 2
            bad = await http.get("/v1/runs", params={"state": "DONE"})
            assert bad.status_code == 400 and bad.json()["field"] == "state"
            assert (await http.get("/v1/runs/nobody")).status_code == 404

        # The CLI.
        cli = Cli(f"127.0.0.1:{app.grpc_port}", infra.token(Scope.READ), tmp_path, group="runs")
        shown = await cli.json("show", "r1")
        assert shown["state"] == "RUN_STATE_FAILED" and shown["trials"][1]["error"] == "LightGBMError: bad"
        listed_json = await cli.json("list", "--model", model, "--state", "registered")
        assert [r["run_id"] for r in listed_json] == ["r2"] and listed_json[0]["version"] == 4
        code, out, err = await cli("show", "r1")
        assert code == 0 and "search trials" in out and "failed" in out, err
        code, _, err = await cli("list", "--state", "done")
        assert code == 2 and "--state" in err

        # Reading runs needs the read scope.
        async with RunClient(f"127.0.0.1:{app.grpc_port}", lambda: infra.token(Scope.PREDICT)) as outsider:
            with pytest.raises(PermissionDenied):
                await outsider.list_runs(model)
        with pytest.raises(InvalidArgument):
            await runs.list_runs("bad/name")
