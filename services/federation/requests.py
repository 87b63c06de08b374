"""Train requests from the platform: which are the federation's, and its answers to them.

The federation consumes ``<prefix>.train.requests`` in a consumer group of its own, as the
trainer does in its, and takes the requests for its model whose spec is federated: the
request's own spec, else the newer of the model's stored spec and its production
version's (the rule the trainer applies to leave them alone). A drift's retrain request
carries no spec, so it comes here once the model's spec says ``training: federated``.
Each taken request is answered on ``<prefix>.train.results`` (STARTED, then REGISTERED,
GATES_FAILED or FAILED), like the trainer's, so whoever asked sees what became of it.

Both topics carry protobuf messages in the CloudEvents Kafka binding (binary mode), the
platform's public contract; the federation decodes them with its own generated code and
the same CloudEvents library. An offset is committed after the request's answer is
published; a request the federation already answered (same idempotency key) is answered
again from its record instead of starting another run.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from mlops.v1 import events_pb2, model_pb2

from services.federation.registration import Trigger
from services.federation.registry import RegistryClient
from services.federation.service import Outcome
from services.federation.status import write_json_atomically

SOURCE = "/federation"
CONTENT_TYPE = "application/protobuf"
ANSWERED_FILE = "answered.json"
LISTENING_FILE = "listening.json"
"""Written once the listener holds its partitions and knows where it reads from: a request
published after it appears is one the service will see."""


class _ProtobufFormat(JSONFormat):
    """The JSON format's attributes with the body kept as bytes (protobuf may be valid UTF-8)."""

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return bytes(body)


_FORMAT = _ProtobufFormat()


class NotARequest(ValueError):
    """A record on the topic that is not a well-formed train request (the trainer dead-letters it)."""


def decode_request(
    headers: Sequence[tuple[str, bytes]], key: bytes | None, value: bytes | None
) -> events_pb2.TrainRequest:
    if value is None:
        raise NotARequest("no value")
    try:
        event = from_binary(KafkaMessage(headers=dict(headers), key=key, value=value), _FORMAT)
    except Exception as exc:  # the library's own errors for a malformed envelope
        raise NotARequest(f"not a CloudEvent: {exc}") from None
    expected = events_pb2.TrainRequest.DESCRIPTOR.full_name
    if event.get_type() != expected:
        raise NotARequest(f"type {event.get_type()!r}, not {expected}")
    data = event.get_data()
    if not isinstance(data, bytes):
        raise NotARequest("the body is not protobuf bytes")
    try:
        return events_pb2.TrainRequest.FromString(data)
    except DecodeError as exc:
        raise NotARequest(f"cannot parse: {exc}") from None


def encode_result(result: events_pb2.TrainResult) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a train result, keyed by model name as the trainer's are."""
    event = CloudEvent(
        attributes={
            "type": events_pb2.TrainResult.DESCRIPTOR.full_name,
            "source": SOURCE,
            "id": uuid.uuid4().hex,
            "time": datetime.now(UTC),
            "datacontenttype": CONTENT_TYPE,
        },
        data=result.SerializeToString(),
    )
    key = result.model_name.encode()
    message = to_binary(event, _FORMAT, key_mapper=lambda _: key)
    return key, message.value, list(message.headers.items())


def is_federated(request: events_pb2.TrainRequest, registry: RegistryClient) -> bool:
    """Whether the request's spec (its own, else the model's newest) says federated."""
    if request.HasField("spec"):
        return request.spec.training == model_pb2.TRAINING_FEDERATED
    specs = [registry.latest_spec(request.model_name)]
    production = registry.production(request.model_name)
    if production is not None and production.get("spec"):
        specs.append(production["spec"])
    newest = max((s for s in specs if s), key=lambda s: int(s.get("spec_version", 0)), default=None)
    if newest is None:
        return False
    spec = json_format.ParseDict(newest, model_pb2.ModelSpec(), ignore_unknown_fields=True)
    return spec.training == model_pb2.TRAINING_FEDERATED


def trigger_of(request: events_pb2.TrainRequest) -> Trigger:
    kind = events_pb2.TrainTrigger.Name(request.trigger).removeprefix("TRAIN_TRIGGER_").lower()
    return Trigger(
        request_id=request.request_id,
        kind=kind if kind != "unspecified" else "federated",
        drift_event_id=request.drift_event_id,
        idempotency_key=request.idempotency_key or request.request_id,
    )


def result_of(
    request: events_pb2.TrainRequest, outcome: Outcome | None, started: datetime
) -> events_pb2.TrainResult:
    """STARTED when ``outcome`` is None, else what the run came to."""
    result = events_pb2.TrainResult(
        request_id=request.request_id,
        model_name=request.model_name,
        idempotency_key=request.idempotency_key,
        status=events_pb2.TRAIN_STATUS_STARTED,
    )
    result.occurred_at.GetCurrentTime()
    if outcome is None:
        return result
    result.duration_seconds = (datetime.now(UTC) - started).total_seconds()
    version = outcome.version
    if version is None:
        result.status = events_pb2.TRAIN_STATUS_FAILED
        result.error = f"federated run: {outcome.error}"[:4000]
        return result
    result.version = int(version["version"])
    result.metrics.update({k: float(v) for k, v in version.get("metrics", {}).items()})
    for gate in version.get("gates", []):
        result.gates.add(
            **{k: gate[k] for k in ("name", "passed", "value", "threshold", "detail") if k in gate}
        )
    passed = bool(version.get("gates_passed"))
    result.status = events_pb2.TRAIN_STATUS_REGISTERED if passed else events_pb2.TRAIN_STATUS_GATES_FAILED
    return result


class RequestListener:
    """Consumes train requests and runs the federation for its model's federated ones."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic_prefix: str,
        model_name: str,
        registry: RegistryClient,
        run: Callable[[Trigger], Outcome],
        workdir: Path,
    ):
        self._bootstrap = bootstrap
        self._requests = f"{topic_prefix}.train.requests"
        self._results = f"{topic_prefix}.train.results"
        self._group = f"{topic_prefix}-federation-{model_name}"
        self._model = model_name
        self._registry = registry
        self._run = run
        self._answered_path = workdir / ANSWERED_FILE
        self.answered: dict[str, str] = (
            json.loads(self._answered_path.read_text()) if self._answered_path.exists() else {}
        )
        """Idempotency key -> the serialized final result (hex), kept across restarts."""

    async def run_forever(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self._requests,
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            # A federated run can take many minutes; the group must not give up on us meanwhile.
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, enable_idempotence=False, acks="all")
        await consumer.start()
        await producer.start()
        try:
            listening = False
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=1)
                for records in batches.values():
                    for record in records:
                        await self._handle(record.headers or (), record.key, record.value, producer)
                if batches:
                    await consumer.commit()
                if not listening and consumer.assignment():
                    await self._listening(consumer)
                    listening = True
        finally:
            await consumer.stop()
            await producer.stop()

    async def _listening(self, consumer: AIOKafkaConsumer) -> None:
        """Fix the assigned partitions' positions, then say so."""
        for partition in consumer.assignment():
            await consumer.position(partition)
        write_json_atomically(
            self._answered_path.with_name(LISTENING_FILE),
            {"topic": self._requests, "group": self._group, "since": datetime.now(UTC).isoformat()},
        )

    async def _handle(
        self,
        headers: Sequence[tuple[str, bytes]],
        key: bytes | None,
        value: bytes | None,
        producer: AIOKafkaProducer,
    ) -> None:
        try:
            request = decode_request(headers, key, value)
        except NotARequest:
            return  # not ours to judge: the trainer's consumer dead-letters it
        if request.model_name != self._model:
            return
        if not await asyncio.to_thread(is_federated, request, self._registry):
            return
        answer_key = request.idempotency_key or request.request_id
        if answer_key in self.answered:
            earlier = events_pb2.TrainResult.FromString(bytes.fromhex(self.answered[answer_key]))
            if earlier.request_id != request.request_id:
                earlier.status = events_pb2.TRAIN_STATUS_DUPLICATE
                earlier.request_id = request.request_id
            await self._publish(producer, earlier)
            return
        started = datetime.now(UTC)
        await self._publish(producer, result_of(request, None, started))
        outcome = await asyncio.to_thread(self._run, trigger_of(request))
        final = result_of(request, outcome, started)
        self.answered[answer_key] = final.SerializeToString().hex()
        write_json_atomically(self._answered_path, self.answered)
        await self._publish(producer, final)

    async def _publish(self, producer: AIOKafkaProducer, result: events_pb2.TrainResult) -> None:
        key, value, headers = encode_result(result)
        await producer.send_and_wait(self._results, value=value, key=key, headers=headers)
