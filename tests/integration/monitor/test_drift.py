"""What the monitor decides and how it reports it, over the real broker: a drift event and
exactly one retrain request (and the webhook's alerts), a held retrain with its reason and
end, the status endpoint and ``mlops drift status``.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from services.common.auth import Scope
from services.common.errors import Kind
from services.common.events import OutgoingRecord, Topics, decode, encode
from services.common.proto.mlops.v1 import events_pb2, model_pb2
from tests.helpers.cli import json_document
from tests.helpers.kafka import read_to_end
from tests.helpers.monitor import label, model_event, prediction, send
from tests.helpers.problems import problem_of
from tests.helpers.waiting import wait_for
from tests.integration.monitor.conftest import WAIT, Running, shadow_answers


def drifting_stream(
    topics: Topics, model: str, version: int, n: int, change_at: int, seed: int, start: float
) -> tuple[list[OutgoingRecord], list[OutgoingRecord]]:
    """Predictions and labels of a classifier wrong 5% of the time, then 40% from ``change_at``."""
    rng = random.Random(seed)
    predictions: list[OutgoingRecord] = []
    labels: list[OutgoingRecord] = []
    for i in range(n):
        event_id = f"{model}-v{version}-{i}"
        wrong = rng.random() < (0.05 if i < change_at else 0.4)
        at = start + i
        predictions.append(prediction(topics.predictions, event_id, model, version, "1", occurred_at=at))
        labels.append(label(topics.labels, event_id, 0.0 if wrong else 1.0, event_time=at))
    return predictions, labels


def trailing(
    predictions: list[OutgoingRecord], labels: list[OutgoingRecord], lag: int
) -> list[OutgoingRecord]:
    """Predictions with each label ``lag`` events after its prediction, as they would come."""
    out = []
    for i, record in enumerate(predictions):
        out.append(record)
        if i >= lag:
            out.append(labels[i - lag])
    return out + labels[max(0, len(labels) - lag) :]


async def test_drift_raises_a_drift_event_and_exactly_one_retrain_request(running: Running) -> None:
    topics, model = running.topics, "churn-drift"
    n, change_at, start = 2000, 1000, 1_800_000_000.0
    predictions, labels = drifting_stream(topics, model, 1, n, change_at, seed=11, start=start)
    # Before and after the change are sent apart, as time would separate them: a backlog
    # spread over partitions is consumed partition by partition, not in event-time order.
    for phase in (slice(0, change_at), slice(change_at, n)):
        await send(running.producer, trailing(predictions[phase], labels[phase], lag=200))

        def reached(stop: int = phase.stop) -> bool:
            return running.labelled(model, 1) == stop

        await wait_for(reached, WAIT, f"samples up to {phase.stop}")

    drifts = [
        decode(r, events_pb2.DriftEvent).message
        for r in await read_to_end(running.infra.kafka_bootstrap, topics.drift)
    ]
    drifts = [d for d in drifts if d.model_name == model]
    assert drifts, "no drift event"
    first = drifts[0]
    assert first.kind == events_pb2.DRIFT_KIND_CONCEPT and first.detector == "ADWIN"
    assert first.model_version == 1 and first.feature == ""
    # Detected after the change, within ADWIN's usual delay for so large a change.
    assert change_at < first.sample_index < change_at + 300
    assert first.statistic > first.reference_statistic
    onset = first.onset_time.seconds
    assert start <= onset <= start + first.sample_index
    assert first.window_size > 0

    await wait_for(
        lambda: running.model(model)["episode"] and running.model(model)["episode"]["retrain_requested_at"],
        WAIT,
        "the retrain request",
    )
    requests = [
        decode(r, events_pb2.TrainRequest).message
        for r in await read_to_end(running.infra.kafka_bootstrap, topics.train_requests)
    ]
    requests = [r for r in requests if r.model_name == model]
    assert len(requests) == 1, requests
    request = requests[0]
    assert request.trigger == events_pb2.TRAIN_TRIGGER_DRIFT
    assert request.parent_version == 1
    assert request.drift_event_id == first.event_id
    assert request.window.start_time == first.onset_time
    assert request.window.dataset == ""
    assert request.requested_by == "service:monitor"
    assert request.idempotency_key and request.request_id
    assert not request.HasField("spec")

    # The webhook heard about both.
    def alerted(kind: str) -> list[dict[str, Any]]:
        return [a for a in running.alerts if a["type"] == kind and a["model"] == model]

    await wait_for(lambda: alerted("drift") and alerted("retrain_requested"), WAIT, "the webhook alerts")
    assert alerted("drift")[0]["id"] == first.event_id
    assert alerted("drift")[0]["kind"] == "concept"
    assert alerted("retrain_requested")[0]["idempotency_key"] == request.idempotency_key

    status = running.version(model, 1)
    assert status is not None
    assert status["detector"]["state"] == "drift"
    assert 0.5 < status["accuracy"] < 0.7

    # A new version goes live: its detectors start empty and the episode is over. It
    # stays at 40% error, which is stationary for it: no drift, no retrain.
    predictions, labels = drifting_stream(topics, model, 2, 600, 0, seed=12, start=start + n)
    await send(running.producer, predictions + labels)
    await wait_for(lambda: running.labelled(model, 2) == 600, WAIT, "version 2 labelled")
    assert running.model(model)["live_version"] == 2
    assert running.model(model)["episode"] is None
    assert running.watched(model, 2)["detector"]["drifts"] == 0

    # A rollback to version 1 (a model event) starts its detectors afresh.
    await send(running.producer, [model_event(topics.model_events, model, 1)])
    await wait_for(lambda: running.model(model)["live_version"] == 1, WAIT, "the rollback")
    assert running.watched(model, 1)["detector"]["samples"] == 0
    assert running.watched(model, 1)["labelled"] == n

    requests = [
        decode(r, events_pb2.TrainRequest).message
        for r in await read_to_end(running.infra.kafka_bootstrap, topics.train_requests)
    ]
    assert len([r for r in requests if r.model_name == model]) == 1


async def test_a_held_retrain_says_why_and_until_when(running: Running) -> None:
    """The retrain under way, then its candidate failing its gates, then the cooldown holding
    a second drift's retrain back: each in the status endpoint, the metrics and the CLI."""
    topics, model, start = running.topics, "held-back", 1_900_000_000.0
    predictions, labels = drifting_stream(topics, model, 1, 1600, 800, seed=21, start=start)
    await send(running.producer, trailing(predictions, labels, lag=50))
    await wait_for(lambda: running.labelled(model, 1) == 1600, WAIT, "version 1 labelled")
    status = running.model(model)
    asked = status["retrain"]["last_requested_at"]
    assert asked is not None, status
    cooldown_until = asked + 3600
    assert status["retrain"]["cooldown_until"] == cooldown_until
    hold = status["retrain"]["hold"]
    assert (hold["reason"], hold["until"]) == ("requested", cooldown_until)
    assert "attempt 1 of 3" in hold["detail"]

    # The trainer says the candidate failed its gates: the status says so, and when the next try is.
    [request] = [
        decode(r, events_pb2.TrainRequest).message
        for r in await read_to_end(running.infra.kafka_bootstrap, topics.train_requests)
        if decode(r, events_pb2.TrainRequest).message.model_name == model
    ]
    await send(
        running.producer,
        [
            train_result(
                topics.train_results, model, request.idempotency_key, events_pb2.TRAIN_STATUS_GATES_FAILED
            )
        ],
    )
    await wait_for(
        lambda: running.model(model)["retrain"]["hold"]["reason"] == "candidate_failed",
        WAIT,
        "the failed candidate",
    )
    hold = running.model(model)["retrain"]["hold"]
    assert hold["until"] == cooldown_until
    assert "ended gates_failed: gates failed: min_metric (0.61 < 0.75)" in hold["detail"]
    metrics = await metrics_text(running)
    assert f'mlops_monitor_retrain_held{{model="{model}",reason="candidate_failed"}} 1.0' in metrics
    held_until = (
        f'mlops_monitor_retrain_held_until_timestamp_seconds{{model="{model}",reason="candidate_failed"}}'
    )
    assert float(metric_value(metrics, held_until)) == cooldown_until
    table = await asyncio.to_thread(drift_status, running, model)
    assert f"{model}: retrain held back by a candidate that failed until" in table.stdout

    # Version 2 goes live (the episode ends); it drifts too, within the cooldown of the first
    # request: enough samples, but the cooldown holds the retrain back until it ends.
    predictions, labels = drifting_stream(topics, model, 2, 1600, 800, seed=22, start=start + 2000)
    await send(running.producer, trailing(predictions, labels, lag=50))
    await wait_for(lambda: running.labelled(model, 2) == 1600, WAIT, "version 2 labelled")
    status = running.model(model)
    assert status["live_version"] == 2 and status["episode"]["version"] == 2
    hold = status["retrain"]["hold"]
    assert (hold["reason"], hold["until"]) == ("cooldown", cooldown_until)
    metrics = await metrics_text(running)
    assert f'mlops_monitor_retrain_held{{model="{model}",reason="cooldown"}} 1.0' in metrics
    assert f'mlops_monitor_retrain_held{{model="{model}",reason="candidate_failed"}}' not in metrics
    table = await asyncio.to_thread(drift_status, running, model)
    assert f"{model}: retrain held back by the cooldown until" in table.stdout
    requests = [
        r
        for r in await read_to_end(running.infra.kafka_bootstrap, topics.train_requests)
        if decode(r, events_pb2.TrainRequest).message.model_name == model
    ]
    assert len(requests) == 1


def train_result(
    topic: str, model: str, key: str, status: events_pb2.TrainStatus.ValueType, version: int = 0
) -> OutgoingRecord:
    """What the trainer publishes when a request ends."""
    message = events_pb2.TrainResult(
        request_id=f"{key}-request",
        idempotency_key=key,
        model_name=model,
        status=status,
        version=version,
        gates=[
            model_pb2.GateResult(
                name="min_metric", passed=False, value=0.61, threshold=0.75, detail="0.61 < 0.75"
            )
        ]
        if status == events_pb2.TRAIN_STATUS_GATES_FAILED
        else [],
    )
    return encode(topic, message, source="/test/trainer", key=model)


async def metrics_text(running: Running) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.app.http_port}", timeout=10) as client:
        return (await client.get("/metrics")).text


def metric_value(text: str, series: str) -> str:
    return next(line.split(" ")[-1] for line in text.splitlines() if line.startswith(series + " "))


async def test_status_endpoint_needs_the_read_scope(running: Running) -> None:
    model = "status-scope"
    ids = [f"scope-{i}" for i in range(8)]
    await running.labelled_pairs(model, ids, wrong={ids[0], ids[1]})
    url = f"http://127.0.0.1:{running.app.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert (await client.get("/health/ready")).status_code == 200
        problem_of(await client.get("/v1/status"), 401, Kind.UNAUTHENTICATED)
        forbidden = await client.get(
            "/v1/status", headers={"authorization": f"Bearer {running.infra.token(Scope.PREDICT)}"}
        )
        assert forbidden.status_code == 403
        # No registry here tells the models' teams: only an administrator sees them.
        reader = {"authorization": f"Bearer {running.infra.token(Scope.READ)}"}
        assert (await client.get("/v1/status", headers=reader)).json()["models"] == []
        assert (await client.get(f"/v1/status/{model}", headers=reader)).status_code == 404
        headers = {"authorization": f"Bearer {running.infra.token(Scope.ADMIN)}"}
        body = (await client.get("/v1/status", headers=headers)).json()
        assert model in {m["model"] for m in body["models"]}
        one = (await client.get(f"/v1/status/{model}", headers=headers)).json()
        assert one["versions"][0]["labelled"] == 8
        # No drift, no retrain: nothing is held back.
        assert one["retrain"] == {"last_requested_at": None, "cooldown_until": None, "hold": None}
        unwatched = problem_of(await client.get("/v1/status/nope", headers=headers), 404, Kind.NOT_FOUND)
        assert unwatched["field"] == "model"
        metrics = (await client.get("/metrics")).text
        assert f'mlops_monitor_accuracy_ratio{{model="{model}",version="1"}} 0.75' in metrics
        assert "mlops_monitor_label_lag_seconds_bucket" in metrics


def drift_status(running: Running, *args: str, token: str | None = None) -> Any:
    """``mlops drift status`` against the module's monitor."""
    from typer.testing import CliRunner

    from services.cli.__main__ import app as cli

    url = f"http://127.0.0.1:{running.app.http_port}"
    bearer = token or running.infra.token(Scope.ADMIN)  # no registry here tells the models' teams
    return CliRunner().invoke(
        cli, ["drift", "status", "--url", url, "--token", bearer, *args], env={"COLUMNS": "200"}
    )


async def test_mlops_drift_status_shows_the_monitor_report(running: Running) -> None:
    topics, model, now = running.topics, "reported", time.time()
    ids = [f"rep-{i}" for i in range(8)]
    await send(
        running.producer,
        [prediction(topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
        + shadow_answers(topics, model, ids, wrong=2, now=now)
        + [label(topics.labels, i, 1.0, event_time=now) for i in ids],
    )
    await wait_for(
        lambda: running.labelled(model, 1) == running.labelled(model, 2) == 8, WAIT, "both versions labelled"
    )
    await wait_for(lambda: running.model(model)["shadow_comparison"], WAIT, "the comparison")

    # The CLI blocks on HTTP: run it off the loop that serves the monitor.
    as_json = await asyncio.to_thread(drift_status, running, "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json_document(as_json.stdout)  # the monitor, in this process, logs there too
    reported = next(m for m in report["models"] if m["model"] == model)
    assert [v["labelled"] for v in reported["versions"]] == [8, 8]
    assert report["monitors"][0]["assignment"]

    table = await asyncio.to_thread(drift_status, running, model)
    assert table.exit_code == 0, table.output
    assert f"{model}: v2 vs live v1 on 8 shared requests: accuracy 0.750 vs 1.000" in table.stdout

    missing = await asyncio.to_thread(drift_status, running, "no-such-model")
    assert missing.exit_code == 5
    denied = await asyncio.to_thread(drift_status, running, token=running.infra.token(Scope.PREDICT))
    assert denied.exit_code == 4
