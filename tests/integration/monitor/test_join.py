"""How the monitor joins predictions with their labels, over the real broker: in any order
and long apart, duplicates counted once, shadow answers against the same labels, what it
cannot use dead-lettered while it carries on, one span per stage's batch, and what never
joins expiring (that test moves the clock past every join deadline, so it runs last).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from services.common.events import OutgoingRecord, Topics, encode
from services.common.kafka import DLQ_ERROR_CLASS, DLQ_ERROR_FIELD, DLQ_ORIGINAL_OFFSET
from services.common.proto.mlops.v1 import events_pb2
from services.common.tracing import tracer
from tests.helpers.kafka import read_to_end
from tests.helpers.monitor import label, prediction, send
from tests.helpers.tracing import finished, recording
from tests.helpers.waiting import wait_for
from tests.integration.monitor.conftest import JOIN_WINDOW, WAIT, Running, shadow_answers


async def test_labels_before_and_long_after_their_predictions_are_joined(running: Running) -> None:
    topics, model, now = running.topics, "late-labels", time.time()
    ids = [f"late-{i}" for i in range(40)]
    wrong = set(ids[::4])  # 10 of 40 wrong: accuracy 0.75

    def label_for(event_id: str) -> OutgoingRecord:
        return label(topics.labels, event_id, 0.0 if event_id in wrong else 1.0, event_time=now)

    # Half the labels come first, then every prediction, then the other half of the labels.
    await send(running.producer, [label_for(i) for i in ids[:20]])
    await send(
        running.producer, [prediction(topics.predictions, i, model, 1, "1", occurred_at=now) for i in ids]
    )
    await wait_for(lambda: running.labelled(model, 1) == 20, WAIT, "the early labels joined")
    await send(running.producer, [label_for(i) for i in ids[20:]])
    await wait_for(lambda: running.labelled(model, 1) == 40, WAIT, "the late labels joined")

    status = running.version(model, 1)
    assert status is not None
    assert status["predictions"] == 40
    assert status["accuracy"] == pytest.approx(0.75)


async def test_faust_knows_when_each_stream_last_took_a_record(running: Running) -> None:
    # Faust's watchdog reads these times; without them it logged a busy partition as
    # "Stream has not started processing" at ERROR once the backlog outlived its timeout.
    # The platform's topics are the route's (a ConsumerLoop), faust's the monitor's own.
    topics, model, now = running.topics, "inbound", time.time()
    before = time.monotonic()
    await send(
        running.producer,
        [prediction(topics.predictions, f"in-{i}", model, 1, "1", occurred_at=now) for i in range(5)],
    )
    await wait_for(lambda: running.predicted(model, 1) == 5, WAIT, "the predictions counted")
    assert running.app.streams is not None
    inbound = running.app.streams.app.monitor.stream_inbound_time
    fresh = {tp.topic for tp, at in inbound.items() if at >= before}
    assert {f"{topics.prefix}.monitor.join", f"{topics.prefix}.monitor.samples"} <= fresh


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
    shadow = shadow_answers(topics, model, ids, wrong=5, now=now)
    labels = [label(topics.labels, i, 1.0, event_time=now) for i in ids]
    await send(running.producer, production + labels[:10] + shadow + labels[10:])
    await wait_for(
        lambda: running.labelled(model, 1) == 20 and running.labelled(model, 2) == 20,
        WAIT,
        "both versions labelled",
    )
    assert running.watched(model, 1)["accuracy"] == pytest.approx(1.0)
    assert running.watched(model, 2)["accuracy"] == pytest.approx(0.75)
    # Shadow traffic never makes its version the live one.
    assert running.model(model)["live_version"] == 1
    # Compared on the same requests: every one of the 20 was answered by both.
    await wait_for(lambda: running.model(model)["shadow_comparison"], WAIT, "the comparison")
    [comparison] = running.model(model)["shadow_comparison"]
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
        out: dict[str, dict[str, bytes]] = {}
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


async def _has_keys(pending: Awaitable[dict[str, dict[str, bytes]]], keys: set[str]) -> bool:
    found = await pending
    return keys <= set(found)


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
