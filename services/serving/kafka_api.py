"""The Open Inference Protocol over Kafka: a thin translation to the same data plane.

Requests arrive on ``<prefix>.inference.requests`` (a consumer group, so replicas share
the partitions) as CloudEvents in the Kafka binding's binary mode:

- ``ce_type`` ``mlops.inference.request``, ``ce_subject`` the model's name, and optionally
  ``ce_modelversion`` (a version number) or ``ce_modelalias`` (an alias such as ``candidate``);
- ``content-type`` ``application/json`` (the V2 REST request body) or
  ``application/protobuf`` (an ``inference.ModelInferRequest``).

Each answer goes to ``<prefix>.inference.responses`` in the request's encoding, keyed like
the request, with ``ce_subject`` the model and ``ce_inresponseto`` the CloudEvents id it
answers; its V2 ``id`` is the request's (the CloudEvents id when the request had none). A
request the model refuses (unknown model, wrong inputs) is answered with ``ce_type``
``mlops.inference.error`` and the error's kind, code, field and message in the body and in
``mlops-error-*`` headers: an error answer, never a lost request. A record that is not a
request of this protocol goes to ``<prefix>.inference.requests.dlq`` with the reason in
``dlq.error.*`` headers (:class:`services.common.kafka.ConsumerLoop`).

Delivery is at least once: offsets are committed once the answers are acknowledged, so a
replica that dies answers nothing twice that it committed, but a batch in flight is
answered again by whichever replica takes its partitions. Clients de-duplicate on the id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from pydantic import ValidationError

from services.common.errors import Internal, PlatformError
from services.common.events import EnvelopeError, IncomingRecord, OutgoingRecord, encode_data, open_binary
from services.common.kafka import DeadLetter, TransientError, publish
from services.common.logging import get_logger
from services.common.proto.inference import grpc_service_pb2 as oip
from services.serving import grpc_api
from services.serving.errors import InvalidInput, Overloaded
from services.serving.http_api import InferBody
from services.serving.inference import ALIAS_PARAMETER, InferenceRequest, InferenceResponse, InferenceService
from services.serving.tensors import Tensor, from_json, to_json

log = get_logger(__name__)

REQUEST_TYPE = "mlops.inference.request"
RESPONSE_TYPE = "mlops.inference.response"
ERROR_TYPE = "mlops.inference.error"
VERSION_ATTRIBUTE = "modelversion"
ALIAS_ATTRIBUTE = "modelalias"
IN_RESPONSE_TO_ATTRIBUTE = "inresponseto"
JSON = "application/json"
PROTOBUF = "application/protobuf"
ERROR_KIND_HEADER = "mlops-error-kind"
ERROR_CODE_HEADER = "mlops-error-code"
ERROR_FIELD_HEADER = "mlops-error-field"
ERROR_MESSAGE_HEADER = "mlops-error-message"


class BadRequest(ValueError):
    """A record that is not an inference request of this protocol (it is dead-lettered)."""

    def __init__(self, error_class: str, message: str, field: str = ""):
        super().__init__(message)
        self.error_class = error_class
        self.field = field


@dataclass(frozen=True)
class KafkaRequest:
    """A request read from its record, ready for the data plane."""

    record: IncomingRecord
    event_id: str
    content_type: str
    request: InferenceRequest
    raw_outputs: bool = False


def read_request(record: IncomingRecord, max_bytes: int) -> KafkaRequest:
    """The request ``record`` carries, or :class:`BadRequest` saying why it is not one
    (a value over ``max_bytes`` included, as gRPC and HTTP refuse one)."""
    if record.value is not None and len(record.value) > max_bytes:
        raise BadRequest(
            "too_large", f"request of {len(record.value)} bytes exceeds the limit of {max_bytes}"
        )
    try:
        attributes = open_binary(record)
    except EnvelopeError as exc:
        raise BadRequest(exc.error_class, str(exc)) from None
    if attributes.get("type") != REQUEST_TYPE:
        raise BadRequest(
            "unexpected_type", f"expected ce_type {REQUEST_TYPE!r}, got {attributes.get('type')!r}", "ce_type"
        )
    model = str(attributes.get("subject") or "")
    if not model:
        raise BadRequest("missing_subject", "ce_subject must name the model", "ce_subject")
    version = str(attributes.get(VERSION_ATTRIBUTE) or "")
    alias = str(attributes.get(ALIAS_ATTRIBUTE) or "")
    if version and alias:
        raise BadRequest(
            "conflicting_route", "send ce_modelversion or ce_modelalias, not both", "ce_modelalias"
        )
    event_id = str(attributes["id"])
    content_type = str(attributes.get("datacontenttype") or "").split(";")[0].strip().lower()
    assert record.value is not None  # open_binary refuses tombstones
    if content_type == JSON:
        return _from_json(record, event_id, model, version, alias)
    if content_type == PROTOBUF:
        return _from_protobuf(record, event_id, model, version, alias)
    raise BadRequest(
        "unexpected_content_type",
        f"content-type must be {JSON} or {PROTOBUF}, got {content_type or 'none'!r}",
        "content-type",
    )


def _with_alias(parameters: dict[str, Any], alias: str) -> dict[str, Any]:
    if alias:
        if parameters.get(ALIAS_PARAMETER, alias) != alias:
            raise BadRequest(
                "conflicting_route", "parameters.alias differs from ce_modelalias", "ce_modelalias"
            )
        parameters[ALIAS_PARAMETER] = alias
    return parameters


def _from_json(record: IncomingRecord, event_id: str, model: str, version: str, alias: str) -> KafkaRequest:
    assert record.value is not None
    try:
        body = InferBody.model_validate_json(record.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRequest("invalid_request", f"{where}: {first['msg']}", where) from None

    def decode() -> list[Tensor]:
        tensors = []
        for given in body.inputs:
            data: list[Any] | None = given.data
            if data is None:
                raise InvalidInput(f"input '{given.name}' has no data", field=f"inputs.{given.name}.data")
            tensors.append(from_json(given.name, given.datatype, given.shape, data))
        return tensors

    request = InferenceRequest(
        model_name=model,
        model_version=version,
        id=body.id or event_id,
        parameters=_with_alias(dict(body.parameters), alias),
        outputs=[o.name for o in body.outputs],
        decode_inputs=decode,
    )
    return KafkaRequest(record, event_id, JSON, request)


def _from_protobuf(
    record: IncomingRecord, event_id: str, model: str, version: str, alias: str
) -> KafkaRequest:
    assert record.value is not None
    try:
        message = oip.ModelInferRequest.FromString(record.value)
    except DecodeError as exc:
        raise BadRequest("decode_error", f"cannot parse inference.ModelInferRequest: {exc}") from None
    if message.model_name and message.model_name != model:
        raise BadRequest("conflicting_model", "model_name differs from ce_subject", "model_name")
    if message.model_version and version and message.model_version != version:
        raise BadRequest("conflicting_route", "model_version differs from ce_modelversion", "model_version")
    request = InferenceRequest(
        model_name=model,
        model_version=version or message.model_version,
        id=message.id or event_id,
        parameters=_with_alias(grpc_api.parameters(message.parameters), alias),
        outputs=[o.name for o in message.outputs],
        decode_inputs=lambda: grpc_api.decode_inputs(message),
    )
    return KafkaRequest(record, event_id, PROTOBUF, request, raw_outputs=bool(message.raw_input_contents))


def response_json(response: InferenceResponse) -> dict[str, Any]:
    """The V2 REST response body."""
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": {"route": response.route},
        "outputs": [
            {
                "name": o.name,
                "datatype": o.datatype,
                "shape": list(o.shape),
                "data": to_json(o.datatype, o.data),
            }
            for o in response.outputs
        ],
    }


class KafkaInference:
    """The consumer loop's handler: answers a batch of request records.

    The batch's requests run concurrently, so they meet in the model's batcher as
    concurrent gRPC calls do. The answers are published (and acknowledged) before the
    handler returns, and the loop commits only then. A request refused because its
    version's queue is full makes the batch be retried (back-pressure), without answering
    again the requests already answered; every other refusal is an error answer, so one
    model that cannot answer never holds up the others' requests on the partition.

    Parameters
    ----------
    service
        The data plane.
    responses
        The responses topic.
    producer
        Sends the answers.
    ready
        Whether serving has read the registry once; until then every model would be unknown,
        so a batch is retried later rather than answered.
    source
        The answers' ``ce_source``.
    max_bytes
        Largest request value accepted (``SERVING_MAX_MESSAGE_BYTES``); larger is dead-lettered.
    """

    def __init__(
        self,
        service: InferenceService,
        responses: str,
        producer: Any,
        *,
        ready: Callable[[], bool],
        source: str,
        max_bytes: int,
    ):
        self._service = service
        self._max_bytes = max_bytes
        self._responses = responses
        self._producer = producer
        self._ready = ready
        self._source = source
        self._answered: set[tuple[str, int, int]] = set()
        """Records of the batch in hand already answered, so a retried batch skips them."""

    async def handle(self, records: list[IncomingRecord]) -> Sequence[DeadLetter]:
        if not self._ready():
            raise TransientError("serving has not read the served models from the registry yet")
        dead: list[DeadLetter] = []
        requests: list[KafkaRequest] = []
        for record in records:
            if (record.topic, record.partition, record.offset) in self._answered:
                continue
            try:
                requests.append(read_request(record, self._max_bytes))
            except BadRequest as exc:
                dead.append(DeadLetter(record, exc.error_class, str(exc), exc.field))
        outcomes = await asyncio.gather(*(self._answer(request) for request in requests))
        answers = [answer for answer in outcomes if answer is not None]
        await publish(self._producer, [answer for _, answer in answers])
        self._answered.update((r.topic, r.partition, r.offset) for r, _ in answers)
        if len(answers) < len(requests):
            raise TransientError(f"{len(requests) - len(answers)} request(s) could not be answered yet")
        self._answered.clear()
        return dead

    async def _answer(self, request: KafkaRequest) -> tuple[IncomingRecord, OutgoingRecord] | None:
        """The answer to publish, or None to retry the request later."""
        try:
            response = await self._service.infer(request.request)
        except Exception as exc:
            if isinstance(exc, Overloaded):
                return None  # back-pressure: wait for the queue to drain, keep the request
            error = exc if isinstance(exc, PlatformError) else Internal("internal error while predicting")
            if not isinstance(exc, PlatformError):
                log.exception("inference_failed", model=request.request.model_name)
            return request.record, self._error(request, error)
        if request.content_type == JSON:
            data = json.dumps(response_json(response), separators=(",", ":")).encode()
        else:
            data = grpc_api.encode_response(response, raw=request.raw_outputs).SerializeToString()
        return request.record, self._record(request, RESPONSE_TYPE, data, [])

    def _error(self, request: KafkaRequest, error: PlatformError) -> OutgoingRecord:
        inner = request.request
        kind, code = error.kind.label, error.kind.grpc_code
        headers = [
            (ERROR_KIND_HEADER, kind.encode()),
            (ERROR_CODE_HEADER, code.encode()),
            (ERROR_FIELD_HEADER, error.field.encode()),
            (ERROR_MESSAGE_HEADER, error.message.encode("utf-8", "replace")[:1024]),
        ]
        if request.content_type == JSON:
            body = {
                "model_name": inner.model_name,
                "id": inner.id,
                "error": error.message,
                "kind": kind,
                "code": code,
                "field": error.field,
            }
            data = json.dumps(body, separators=(",", ":")).encode()
        else:
            message = oip.ModelInferResponse(model_name=inner.model_name, id=inner.id)
            for name, value in (
                ("error", error.message),
                ("kind", kind),
                ("code", code),
                ("field", error.field),
            ):
                message.parameters[name].string_param = value
            data = message.SerializeToString()
        return self._record(request, ERROR_TYPE, data, headers)

    def _record(
        self, request: KafkaRequest, type: str, data: bytes, headers: list[tuple[str, bytes]]
    ) -> OutgoingRecord:
        return encode_data(
            self._responses,
            data,
            type=type,
            content_type=request.content_type,
            source=self._source,
            key=request.record.key if request.record.key is not None else request.request.id,
            attributes={"subject": request.request.model_name, IN_RESPONSE_TO_ATTRIBUTE: request.event_id},
            headers=headers,
        )
