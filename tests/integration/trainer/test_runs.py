"""Every trainer job is a run in the registry, through the real results topic: a registered
job with the trials its version records, and a job whose every configuration failed, which
registers nothing but keeps its trials and its reason."""

from __future__ import annotations

import asyncio

from services.common.auth import Scope
from services.common.clients.runs import RunClient
from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainStatus, TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from services.common.proto.mlops.v1.runs_pb2 import RUN_STATE_FAILED, RUN_STATE_REGISTERED, Run
from services.common.trials import recorded_trials
from services.sdk import Client
from tests.helpers.waiting import eventually
from tests.integration.trainer.conftest import Platform
from tests.unit.trainer import synthetic


async def test_registered_and_failed_jobs_are_runs_with_their_trials(
    platform: Platform, names: tuple[str, str]
) -> None:
    dataset, model = names
    await platform.dataset(dataset, 400)
    good = synthetic.spec(model, dataset=dataset, families=("logistic_regression",))
    good.estimators[0].search_space_json = '{"C": {"low": 0.05, "high": 20, "log": true}}'
    good.window.CopyFrom(DataWindow(dataset=dataset, max_rows=300))
    # One iteration never converges: every configuration of the search fails.
    hopeless = synthetic.spec(
        model, dataset=dataset, families=("logistic_regression",), params='{"max_iter": 1}'
    )
    hopeless.estimators[0].search_space_json = '{"C": [0.1, 1.0, 10.0]}'
    hopeless.window.CopyFrom(DataWindow(dataset=dataset, max_rows=300))

    registered_id = await platform.request(
        TrainRequest(
            model_name=model, spec=good, trigger=TrainTrigger.TRAIN_TRIGGER_MANUAL, requested_by="alice"
        )
    )
    assert (await platform.results.final(registered_id)).status == TrainStatus.TRAIN_STATUS_REGISTERED
    failed_id = await platform.request(TrainRequest(model_name=model, spec=hopeless))
    failure = await platform.results.final(failed_id)
    assert failure.status == TrainStatus.TRAIN_STATUS_FAILED and not failure.version

    token = platform.infra.token(Scope.READ)
    async with RunClient(f"127.0.0.1:{platform.registry_app.grpc_port}", lambda: token) as runs:

        async def finished() -> list[Run]:
            return await runs.list_runs(model)

        found = await eventually(
            finished,
            lambda listed: {r.state for r in listed} == {RUN_STATE_REGISTERED, RUN_STATE_FAILED},
            within=60,
        )
        assert [r.run_id for r in found] == [failed_id, registered_id], "newest first"
        registered, failed = await runs.get_run(registered_id), await runs.get_run(failed_id)

    version = await platform.registry.get_version(model, registered.version)
    assert registered.version == version.version == 1 and registered.family == "logistic_regression"
    assert (registered.trigger, registered.requested_by, registered.dataset) == (
        TrainTrigger.TRAIN_TRIGGER_MANUAL,
        "alice",
        dataset,
    )
    assert len(registered.trials) == len(recorded_trials(version.params)) > 1
    assert registered.started_at.ToNanoseconds() < registered.finished_at.ToNanoseconds()
    assert registered.metrics["accuracy"] == version.metrics["accuracy"]

    assert (
        failed.error.startswith("training_failed: every configuration failed") or "converge" in failed.error
    )
    assert failed.trials and all(not t.HasField("score") and "converge" in t.error for t in failed.trials)
    assert failed.version == 0 and failed.dataset == dataset and failed.progress == 1.0

    def from_a_notebook() -> tuple[list[str], str]:
        address = f"127.0.0.1:{platform.registry_app.grpc_port}"
        with Client(address, "127.0.0.1:1", token) as client:  # serving is not needed to read runs
            return [r.run_id for r in client.runs(model, state="failed")], client.run(registered_id).family

    assert await asyncio.to_thread(from_a_notebook) == ([failed_id], "logistic_regression")
