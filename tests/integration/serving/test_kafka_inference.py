"""Inference over Kafka, driven by a client the platform does not wrap (confluent-kafka).

Serving runs in process on the session's broker; the requests and answers travel as any
Kafka producer and consumer would send and read them: CloudEvents headers written by hand,
a V2 JSON (or OIP protobuf) body.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import numpy as np
from confluent_kafka import Message

from services.common.proto.inference import grpc_service_pb2 as oip
from tests.integration.serving.conftest import Fitted, Stack, features_request, output
from tests.integration.serving.kafka_client import (
    headers_of,
    produce,
    read_until,
    reader,
    request_headers,
    v2_json,
    value_of,
)


async def answers_to(stack: Stack, ids: set[str], topic: str | None = None) -> dict[str, Message]:
    """The message answering each CloudEvents id in ``ids`` (read off the event loop, which
    runs serving)."""

    def answered(messages: list[Message]) -> bool:
        return ids <= {headers_of(m).get("ce_inresponseto") for m in messages}

    with reader(stack.infra.kafka_bootstrap, topic or stack.topics.inference_responses) as consumer:
        messages = await asyncio.to_thread(read_until, consumer, answered)
    return {
        headers_of(m)["ce_inresponseto"]: m for m in messages if headers_of(m).get("ce_inresponseto") in ids
    }


async def test_a_v2_json_request_from_confluent_kafka_is_answered_with_its_id(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    request_id, event_id = "order-" + uuid.uuid4().hex, uuid.uuid4().hex
    produce(
        stack.infra.kafka_bootstrap,
        stack.topics.inference_requests,
        [(b"customer-7", v2_json(request_id, model_a.X[:3]), request_headers(model_name, event_id))],
    )
    answer = (await answers_to(stack, {event_id}))[event_id]
    headers = headers_of(answer)
    assert headers["ce_type"] == "mlops.inference.response"
    assert headers["ce_subject"] == model_name
    assert headers["content-type"] == "application/json"
    assert answer.key() == b"customer-7"  # same key: same partition as the request's answers before it
    body: dict[str, Any] = json.loads(value_of(answer))
    assert body["id"] == request_id
    assert body["model_version"] == "1"
    probabilities = next(o for o in body["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(
        np.array(probabilities["data"]).reshape(probabilities["shape"]), model_a.proba(model_a.X[:3])
    )
    # The same prediction log as gRPC: monitor joins this request like any other.
    (record,) = await stack.predictions.of([request_id])
    assert record.model_name == model_name and record.model_version == 1


async def test_protobuf_requests_and_refusals_are_answered_in_kind(
    stack: Stack, model_name: str, model_a: Fitted, model_b: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.register(model_name, model_b)
    await stack.served(model_name, production=2)
    pinned, unknown, bad_shape = (uuid.uuid4().hex for _ in range(3))
    protobuf = "application/protobuf"
    produce(
        stack.infra.kafka_bootstrap,
        stack.topics.inference_requests,
        [
            (
                None,
                features_request("", model_a.X[:2], request_id="p1").SerializeToString(),
                request_headers(model_name, pinned, protobuf, modelversion="2"),
            ),
            (None, v2_json("u1", model_a.X[:1]), request_headers("no-such-model", unknown)),
            (None, v2_json("s1", model_a.X[:1, :2]), request_headers(model_name, bad_shape)),
        ],
    )
    answers = await answers_to(stack, {pinned, unknown, bad_shape})
    response = oip.ModelInferResponse.FromString(value_of(answers[pinned]))
    assert headers_of(answers[pinned])["content-type"] == protobuf
    assert (response.id, response.model_version) == ("p1", "2")
    np.testing.assert_allclose(output(response, "probabilities"), model_b.proba(model_a.X[:2]))
    # A request the model refuses is answered with the error, correlated like an answer.
    for event_id, request_id, kind in ((unknown, "u1", "not_found"), (bad_shape, "s1", "invalid")):
        headers = headers_of(answers[event_id])
        assert headers["ce_type"] == "mlops.inference.error"
        assert headers["mlops-error-kind"] == kind
        body = json.loads(value_of(answers[event_id]))
        assert body["id"] == request_id and body["kind"] == kind and body["error"]
    assert "expected shape [-1, 4], got [1, 2]" in json.loads(value_of(answers[bad_shape]))["error"]


async def test_a_malformed_request_is_dead_lettered_with_the_reason(
    stack: Stack, model_name: str, model_a: Fitted
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    not_json, no_subject, good = (uuid.uuid4().hex for _ in range(3))
    without_subject = [(n, v) for n, v in request_headers(model_name, no_subject) if n != "ce_subject"]
    produce(
        stack.infra.kafka_bootstrap,
        stack.topics.inference_requests,
        [
            (b"bad-1", b'{"inputs": [', request_headers(model_name, not_json)),
            (b"bad-2", v2_json("x", model_a.X[:1]), without_subject),
            (b"good", v2_json("g", model_a.X[:1]), request_headers(model_name, good)),
        ],
    )
    dlq = stack.topics.dlq(stack.topics.inference_requests)

    def both(messages: list[Message]) -> bool:
        return {not_json, no_subject} <= {headers_of(m).get("ce_id") for m in messages}

    with reader(stack.infra.kafka_bootstrap, dlq) as consumer:
        dead = {headers_of(m)["ce_id"]: m for m in await asyncio.to_thread(read_until, consumer, both)}
    assert headers_of(dead[not_json])["dlq.error.class"] == "invalid_request"
    assert headers_of(dead[not_json])["dlq.original.topic"] == stack.topics.inference_requests
    assert value_of(dead[not_json]) == b'{"inputs": ['  # the record as it was sent, to replay once fixed
    assert headers_of(dead[no_subject])["dlq.error.class"] == "missing_subject"
    assert headers_of(dead[no_subject])["dlq.error.field"] == "ce_subject"
    # The consumer moved on: the good request behind them is answered.
    answer = (await answers_to(stack, {good}))[good]
    assert json.loads(value_of(answer))["id"] == "g"
