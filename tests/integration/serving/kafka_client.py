"""A Kafka client the platform does not wrap (confluent-kafka), as the Kafka inference tests
use it: CloudEvents headers written by hand, reads by assignment (no group join to wait for).
The reads block: run them in a thread when serving runs in the test's event loop."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

PARTITIONS = 4  # what serving creates its topics with

Headers = list[tuple[str, str | bytes | None]]
"""Record headers as confluent-kafka takes them."""


def request_headers(
    model: str, event_id: str, content_type: str = "application/json", **extra: str
) -> Headers:
    """CloudEvents binary-mode headers, as a producer outside the platform writes them."""
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": "urn:test:kafka-client",
        "ce_type": "mlops.inference.request",
        "ce_subject": model,
        "content-type": content_type,
        **{f"ce_{name}": value for name, value in extra.items()},
    }
    return [(name, value.encode()) for name, value in headers.items()]


def v2_json(request_id: str, rows: np.ndarray) -> bytes:
    return json.dumps(
        {
            "id": request_id,
            "inputs": [
                {
                    "name": "features",
                    "datatype": "FP64",
                    "shape": list(rows.shape),
                    "data": rows.ravel().tolist(),
                }
            ],
        }
    ).encode()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, Headers]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False})
    for key, value, headers in records:
        producer.produce(topic, value=value, key=key, headers=headers)
    assert producer.flush(30) == 0, "records left unsent"


@contextmanager
def reader(bootstrap: str, topic: str) -> Iterator[Consumer]:
    """A confluent-kafka consumer on every partition of ``topic`` from its start (assigned:
    no group join to wait for)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-" + uuid.uuid4().hex,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    try:
        yield consumer
    finally:
        consumer.close()


def read_until(
    consumer: Consumer, done: Callable[[list[Message]], bool], within: float = 60.0
) -> list[Message]:
    """Every message until ``done`` holds of those read (blocking: run it in a thread)."""
    messages: list[Message] = []
    deadline = time.monotonic() + within
    while not done(messages):
        assert time.monotonic() < deadline, f"gave up after {len(messages)} message(s)"
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            messages.append(message)
    return messages


def headers_of(message: Message) -> dict[str, str]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {name: value.decode() if isinstance(value, bytes) else value or "" for name, value in pairs}


def value_of(message: Message) -> bytes:
    """The record's value (every answer and dead letter has one)."""
    value = message.value()
    assert isinstance(value, bytes), f"a record without a value: {message.key()!r}"
    return value
