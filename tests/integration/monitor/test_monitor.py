"""The monitor over the real broker: predictions and labels in; drift events, one retrain
request, live quality and dead letters out.

One monitor runs for the whole module (a consumer-group join costs seconds on the
embedded broker); each test uses its own model names, so they do not interfere. The
clock is the wall clock plus an offset the expiry test moves forward, so that test runs last.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from pydantic import SecretStr

from services.common.auth import Scope
from services.common.errors import Kind
from services.common.events import OutgoingRecord, Topics, decode, encode
from services.common.http import HttpServer
from services.common.kafka import DLQ_ERROR_CLASS, DLQ_ERROR_FIELD, DLQ_ORIGINAL_OFFSET, create_producer
from services.common.proto.mlops.v1 import events_pb2, model_pb2
from services.common.tracing import tracer
from services.monitor.app import MonitorApp
from services.monitor.settings import MonitorSettings
from tests.conftest import Infra
from tests.helpers.kafka import read_to_end
from tests.helpers.problems import problem_of
from tests.helpers.tracing import finished, recording
from tests.integration.monitor.helpers import (
    drained,
    label,
    model_event,
    prediction,
    send,
    stages,
    wait_for,
)

JOIN_WINDOW = 600.0
WAIT = 120.0
"""Seconds any one wait may take: generous, since the machine is shared; waits end as soon as they can."""
MIN_SAMPLES = 100


class Clock:
    """Wall-clock time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Running:
    app: MonitorApp
    topics: Topics
    producer: AIOKafkaProducer
    clock: Clock
    infra: Infra
    alerts: list[dict[str, Any]]

    def version(self, model: str, version: int) -> dict[str, object] | None:
        for entry in self.app.monitor.status(self.clock()):
            if entry["model"] == model:
                for v in entry["versions"]:
                    if v["version"] == version:
                        return dict(v)
        return None

    def model(self, model: str) -> dict[str, object]:
        return next(e for e in self.app.monitor.status(self.clock()) if e["model"] == model)

    def labelled(self, model: str, version: int) -> int:
        status = self.version(model, version)
        return int(status["labelled"]) if status else 0  # type: ignore[call-overload]

    def predicted(self, model: str, version: int) -> int:
        status = self.version(model, version)
        return int(status["predictions"]) if status else 0  # type: ignore[call-overload]

    async def drained(self) -> None:
        """Wait until the monitor has handled (and committed) everything sent so far."""
        await drained(
            self.infra.kafka_bootstrap, stages(self.topics, self.app.settings.consumer_group()), WAIT
        )

    async def labelled_pairs(self, model: str, ids: list[str], wrong: Collection[str] = ()) -> None:
        """Predictions of ``model`` v1 for ``ids`` and their labels, once all are labelled."""
        now = time.time()
        await send(
            self.producer,
            [prediction(self.topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
            + [label(self.topics.labels, i, 0.0 if i in wrong else 1.0, event_time=now) for i in ids],
        )
        await wait_for(lambda: self.labelled(model, 1) == len(ids), WAIT, f"{model} labelled")


@pytest.fixture(scope="module")
async def running(infra: Infra) -> AsyncIterator[Running]:
    topics = Topics(prefix=f"mon{random.randrange(16**8):08x}")
    # A webhook receiver on loopback (allowed here explicitly; refused by default).
    alerts: list[dict[str, Any]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(body: dict[str, Any]) -> dict[str, str]:
        alerts.append(body)
        return {"status": "ok"}

    webhook = HttpServer(receiver, "127.0.0.1", 0)
    await webhook.start()
    settings = MonitorSettings(
        MLOPS_KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
        MLOPS_TOPIC_PREFIX=topics.prefix,
        MLOPS_AUTH_SECRET=infra.auth_secret,
        http_port=0,
        join_window_seconds=JOIN_WINDOW,
        sweep_interval_seconds=0.2,
        cooldown_seconds=3600,
        retrain_min_samples=MIN_SAMPLES,
        commit_interval_seconds=0.2,
        alert_webhook_url=SecretStr(f"http://127.0.0.1:{webhook.port}/hook"),
        alert_webhook_schemes=["http"],
        alert_webhook_allow_private=True,
        # No registry in this suite (test_training_reference.py has one): data drift is
        # measured against live traffic, and nothing calls a registry on the default port.
        training_reference=False,
    )
    clock = Clock()
    app = MonitorApp(settings, clock=clock)
    producer = create_producer(infra.kafka_bootstrap, "monitor-test")
    await producer.start()
    await app.start()
    try:
        yield Running(app, topics, producer, clock, infra, alerts)
    finally:
        await app.stop()
        await producer.stop()
        await webhook.stop()


def drifting_stream(
    topics: Topics, model: str, version: int, n: int, change_at: int, seed: int, start: float
) -> tuple[list, list]:
    """Predictions and labels of a classifier wrong 5% of the time, then 40% from ``change_at``."""
    rng = random.Random(seed)
    predictions, labels = [], []
    for i in range(n):
        event_id = f"{model}-v{version}-{i}"
        wrong = rng.random() < (0.05 if i < change_at else 0.4)
        at = start + i
        predictions.append(prediction(topics.predictions, event_id, model, version, "1", occurred_at=at))
        labels.append(label(topics.labels, event_id, 0.0 if wrong else 1.0, event_time=at))
    return predictions, labels


def trailing(predictions: list, labels: list, lag: int) -> list:
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
        await wait_for(
            lambda p=phase: running.labelled(model, 1) == p.stop, WAIT, f"samples up to {phase.stop}"
        )

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
        lambda: running.model(model)["episode"] and running.model(model)["episode"]["retrain_requested_at"],  # type: ignore[index]
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
    assert status["detector"]["state"] == "drift"  # type: ignore[index]
    assert 0.5 < status["accuracy"] < 0.7  # type: ignore[operator]

    # A new version goes live: its detectors start empty and the episode is over. It
    # stays at 40% error, which is stationary for it: no drift, no retrain.
    predictions, labels = drifting_stream(topics, model, 2, 600, 0, seed=12, start=start + n)
    await send(running.producer, predictions + labels)
    await wait_for(lambda: running.labelled(model, 2) == 600, WAIT, "version 2 labelled")
    assert running.model(model)["live_version"] == 2
    assert running.model(model)["episode"] is None
    assert running.version(model, 2)["detector"]["drifts"] == 0  # type: ignore[index]

    # A rollback to version 1 (a model event) starts its detectors afresh.
    await send(running.producer, [model_event(topics.model_events, model, 1)])
    await wait_for(lambda: running.model(model)["live_version"] == 1, WAIT, "the rollback")
    assert running.version(model, 1)["detector"]["samples"] == 0  # type: ignore[index]
    assert running.version(model, 1)["labelled"] == n  # type: ignore[index]

    requests = [
        decode(r, events_pb2.TrainRequest).message
        for r in await read_to_end(running.infra.kafka_bootstrap, topics.train_requests)
    ]
    assert len([r for r in requests if r.model_name == model]) == 1


async def test_labels_before_and_long_after_their_predictions_are_joined(running: Running) -> None:
    topics, model, now = running.topics, "late-labels", time.time()
    ids = [f"late-{i}" for i in range(40)]
    wrong = set(ids[::4])  # 10 of 40 wrong: accuracy 0.75

    def label_for(event_id: str) -> object:
        return label(topics.labels, event_id, 0.0 if event_id in wrong else 1.0, event_time=now)

    # Half the labels come first, then every prediction, then the other half of the labels.
    await send(running.producer, [label_for(i) for i in ids[:20]])  # type: ignore[misc]
    await send(
        running.producer, [prediction(topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
    )
    await wait_for(lambda: running.labelled(model, 1) == 20, WAIT, "the early labels joined")
    await send(running.producer, [label_for(i) for i in ids[20:]])  # type: ignore[misc]
    await wait_for(lambda: running.labelled(model, 1) == 40, WAIT, "the late labels joined")

    status = running.version(model, 1)
    assert status is not None
    assert status["predictions"] == 40
    assert status["accuracy"] == pytest.approx(0.75)


async def test_duplicate_predictions_and_labels_are_counted_once(running: Running) -> None:
    topics, model, now = running.topics, "dupes", time.time()
    ids = [f"dup-{i}" for i in range(30)]
    predictions = [prediction(topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
    labels = [label(topics.labels, i, 1.0 if n % 3 else 0.0, event_time=now) for n, i in enumerate(ids)]
    # Redelivery: every prediction and label twice, some duplicates after the pair joined.
    await send(running.producer, predictions + labels + predictions + labels[:10])
    # Every partition of every stage committed to its end: no duplicate is still on its way.
    await running.drained()
    status = running.version(model, 1)
    assert status is not None
    assert status["predictions"] == 30
    assert status["labelled"] == 30
    assert status["accuracy"] == pytest.approx(20 / 30)


async def test_shadow_answers_join_the_same_labels_as_production(running: Running) -> None:
    topics, model, now = running.topics, "shadowed", time.time()
    ids = [f"sh-{i}" for i in range(20)]
    production = [prediction(topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
    # The candidate answers "0" for the first 5: wrong there, right elsewhere.
    shadow = [
        prediction(
            topics.predictions,
            i,
            model,
            2,
            "0" if n < 5 else "1",
            occurred_at=now,
            route="shadow",
            shadow=True,
        )
        for n, i in enumerate(ids)
    ]
    labels = [label(topics.labels, i, 1.0, event_time=now) for i in ids]
    await send(running.producer, production + labels[:10] + shadow + labels[10:])
    await wait_for(
        lambda: running.labelled(model, 1) == 20 and running.labelled(model, 2) == 20,
        WAIT,
        "both versions labelled",
    )
    assert running.version(model, 1)["accuracy"] == pytest.approx(1.0)  # type: ignore[index]
    assert running.version(model, 2)["accuracy"] == pytest.approx(0.75)  # type: ignore[index]
    # Shadow traffic never makes its version the live one.
    assert running.model(model)["live_version"] == 1
    # Compared on the same requests: every one of the 20 was answered by both.
    await wait_for(lambda: running.model(model)["shadow_comparison"], WAIT, "the comparison")
    [comparison] = running.model(model)["shadow_comparison"]  # type: ignore[misc]
    assert comparison == {"version": 2, "against": 1, "samples": 20, "accuracy": 0.75, "live_accuracy": 1.0}


async def test_records_the_monitor_cannot_use_are_dead_lettered_and_it_carries_on(running: Running) -> None:
    topics, model, now = running.topics, "after-poison", time.time()
    bad_version = events_pb2.PredictionRecord(
        request_id="bad-1",
        model_name=model,
        model_version=0,
        rows=[events_pb2.PredictedRow(id="bad-1", label="1")],
    )
    nan_value = events_pb2.PredictionRecord(
        request_id="bad-2",
        model_name=model,
        model_version=1,
        rows=[events_pb2.PredictedRow(id="bad-2", value=math.nan)],
    )
    no_label = events_pb2.LabelRecord(event_id="bad-3")
    await running.producer.send_and_wait(topics.predictions, b"\x00 not an envelope", key=b"junk")
    await send(
        running.producer,
        [
            encode(topics.predictions, bad_version, source="/test", key="bad-1"),
            encode(topics.predictions, nan_value, source="/test", key="bad-2"),
            encode(topics.labels, no_label, source="/test", key="bad-3"),
            # The right message on the wrong topic.
            encode(
                topics.labels, events_pb2.PredictionRecord(request_id="bad-4"), source="/test", key="bad-4"
            ),
            prediction(topics.predictions, "good-1", model, 1, "1", occurred_at=now),
            label(topics.labels, "good-1", 1.0, event_time=now),
        ],
    )
    await wait_for(lambda: running.labelled(model, 1) == 1, WAIT, "the good pair after the poison")

    async def dead_letters() -> dict[str, dict[str, bytes]]:
        out = {}
        for topic in (topics.predictions, topics.labels):
            for record in await read_to_end(running.infra.kafka_bootstrap, Topics.dlq(topic)):
                out[(record.key or b"").decode()] = dict(record.headers)
        return out

    await wait_for(
        lambda: _has_keys(dead_letters(), {"junk", "bad-1", "bad-2", "bad-3", "bad-4"}), WAIT, "dead letters"
    )
    dead = await dead_letters()
    assert dead["junk"][DLQ_ERROR_CLASS] == b"not_cloudevent"
    assert dead["bad-1"][DLQ_ERROR_FIELD] == b"model_version"
    assert dead["bad-2"][DLQ_ERROR_FIELD] == b"rows[0].value"
    assert dead["bad-3"][DLQ_ERROR_FIELD] == b"label"
    assert dead["bad-4"][DLQ_ERROR_CLASS] == b"unexpected_type"
    assert DLQ_ORIGINAL_OFFSET in dead["junk"]


async def _has_keys(pending: object, keys: set[str]) -> bool:
    found = await pending  # type: ignore[misc]
    return keys <= set(found)


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
        headers = {"authorization": f"Bearer {running.infra.token(Scope.READ)}"}
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
    bearer = token or running.infra.token(Scope.READ)
    return CliRunner().invoke(
        cli, ["drift", "status", "--url", url, "--token", bearer, *args], env={"COLUMNS": "200"}
    )


async def test_mlops_drift_status_shows_the_monitor_report(running: Running) -> None:
    topics, model, now = running.topics, "reported", time.time()
    ids = [f"rep-{i}" for i in range(8)]
    # The candidate answers "0" for the first 2: wrong there, right elsewhere.
    await send(
        running.producer,
        [prediction(topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
        + [
            prediction(
                topics.predictions,
                i,
                model,
                2,
                "0" if n < 2 else "1",
                occurred_at=now,
                route="shadow",
                shadow=True,
            )
            for n, i in enumerate(ids)
        ]
        + [label(topics.labels, i, 1.0, event_time=now) for i in ids],
    )
    await wait_for(
        lambda: running.labelled(model, 1) == running.labelled(model, 2) == 8, WAIT, "both versions labelled"
    )
    await wait_for(lambda: running.model(model)["shadow_comparison"], WAIT, "the comparison")

    # The CLI blocks on HTTP: run it off the loop that serves the monitor.
    as_json = await asyncio.to_thread(drift_status, running, "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
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


async def test_each_stage_handles_a_batch_in_one_span_that_reaches_the_predictions_trace(
    running: Running,
) -> None:
    topics, model, now = running.topics, "traced", time.time()

    def stage(topic: str) -> list[ReadableSpan]:
        return [s for s in finished(SpanKind.CONSUMER) if s.name == f"process {topic}"]

    with recording():
        with tracer().start_as_current_span("served") as served:
            traced = prediction(topics.predictions, "traced-0", model, 1, "1", occurred_at=now)
        await send(running.producer, [traced, label(topics.labels, "traced-0", 1.0, event_time=now)])
        await wait_for(lambda: running.labelled(model, 1) == 1, WAIT, "the traced prediction joined")
        # The route's loop names its span by the topics of the batch it handled.
        route = [
            s
            for s in finished(SpanKind.CONSUMER)
            if s.name.startswith("process ")
            and topics.predictions in s.name.removeprefix("process ").split(",")
        ]
        served_trace = served.get_span_context().trace_id
        assert any(
            s.context.trace_id == served_trace
            or any(link.context.trace_id == served_trace for link in s.links)
            for s in route
        ), "the route span that handled the prediction is its trace's child or links to it"
        assert stage(f"{topics.prefix}.monitor.join") and stage(f"{topics.prefix}.monitor.samples")


def train_result(topic: str, model: str, key: str, status: int, version: int = 0) -> OutgoingRecord:
    """What the trainer publishes when a request ends."""
    message = events_pb2.TrainResult(
        request_id=f"{key}-request",
        idempotency_key=key,
        model_name=model,
        status=status,  # type: ignore[arg-type]
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


async def test_a_held_retrain_says_why_and_until_when(running: Running) -> None:
    """The retrain under way, then its candidate failing its gates, then the cooldown holding
    a second drift's retrain back: each in the status endpoint, the metrics and the CLI."""
    topics, model, start = running.topics, "held-back", 1_900_000_000.0
    predictions, labels = drifting_stream(topics, model, 1, 1600, 800, seed=21, start=start)
    await send(running.producer, trailing(predictions, labels, lag=50))
    await wait_for(lambda: running.labelled(model, 1) == 1600, WAIT, "version 1 labelled")
    status = running.model(model)
    asked = status["retrain"]["last_requested_at"]  # type: ignore[index]
    assert asked is not None, status
    cooldown_until = asked + 3600
    assert status["retrain"]["cooldown_until"] == cooldown_until  # type: ignore[index]
    hold = status["retrain"]["hold"]  # type: ignore[index]
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
        lambda: running.model(model)["retrain"]["hold"]["reason"] == "candidate_failed",  # type: ignore[index]
        WAIT,
        "the failed candidate",
    )
    hold = running.model(model)["retrain"]["hold"]  # type: ignore[index]
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
    assert status["live_version"] == 2 and status["episode"]["version"] == 2  # type: ignore[index]
    hold = status["retrain"]["hold"]  # type: ignore[index]
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


async def metrics_text(running: Running) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.app.http_port}", timeout=10) as client:
        return (await client.get("/metrics")).text


def metric_value(text: str, series: str) -> str:
    return next(line.split(" ")[-1] for line in text.splitlines() if line.startswith(series + " "))


async def test_unmatched_predictions_and_labels_expire_and_are_counted(running: Running) -> None:
    """Runs last in the module: it moves the clock past every join deadline."""
    from services.monitor import metrics

    topics, model, now = running.topics, "expiring", time.time()
    expired_predictions = metrics.JOIN_EXPIRED.labels("prediction")
    expired_labels = metrics.JOIN_EXPIRED.labels("label")
    before = expired_predictions._value.get(), expired_labels._value.get()
    held = metrics.JOIN_PENDING._value.get()
    await send(
        running.producer,
        [
            prediction(topics.predictions, "lonely-prediction", model, 1, "1", occurred_at=now),
            label(topics.labels, "lonely-label", 1.0, event_time=now),
        ],
    )
    await wait_for(lambda: metrics.JOIN_PENDING._value.get() == held + 2, WAIT, "both held in the join")
    running.clock.offset += JOIN_WINDOW + 1
    await wait_for(
        lambda: expired_predictions._value.get() > before[0] and expired_labels._value.get() > before[1],
        WAIT,
        "expiry",
    )
    # The detect stage counts the prediction on its own time, after the join passed it on.
    await wait_for(lambda: running.predicted(model, 1) == 1, WAIT, "the lonely prediction counted")
    assert running.labelled(model, 1) == 0
