"""Reading Kafka inference requests: what is a request of the protocol, what is dead-lettered
and why (the integration tests send them through a real broker)."""

from __future__ import annotations

import json

import pytest

from services.common.events import IncomingRecord
from services.common.proto.inference import grpc_service_pb2 as oip
from services.serving.kafka_api import BadRequest, read_request

LIMIT = 64 * 1024


def record(
    value: bytes | None, content_type: str = "application/json", **overrides: str | None
) -> IncomingRecord:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": "evt-1",
        "ce_source": "urn:test",
        "ce_type": "mlops.inference.request",
        "ce_subject": "churn",
        "content-type": content_type,
    }
    for name, given in overrides.items():
        if given is None:
            headers.pop(name, None)
        else:
            headers[name] = given
    return IncomingRecord(
        topic="p.inference.requests",
        partition=0,
        offset=7,
        key=b"k",
        value=value,
        headers=tuple((name, given.encode()) for name, given in headers.items()),
        timestamp_ms=0,
    )


BODY = json.dumps(
    {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}]}
).encode()


def test_a_json_request_takes_its_model_route_and_id_from_the_envelope() -> None:
    read = read_request(record(BODY, ce_modelalias="candidate"), LIMIT)
    request = read.request
    assert (request.model_name, request.model_version, request.id) == ("churn", "", "evt-1")
    assert request.parameters == {"alias": "candidate"}
    (tensor,) = request.decode_inputs()
    assert (tensor.name, tensor.shape) == ("features", (1, 2))
    assert read.event_id == "evt-1" and read.content_type == "application/json"


def test_a_protobuf_request_keeps_its_own_id_and_version() -> None:
    message = oip.ModelInferRequest(model_name="churn", model_version="3", id="r-9")
    read = read_request(record(message.SerializeToString(), "application/protobuf"), LIMIT)
    assert (read.request.model_version, read.request.id) == ("3", "r-9")


@pytest.mark.parametrize(
    ("value", "content_type", "overrides", "error_class", "field"),
    [
        (BODY, "application/json", {"ce_specversion": None}, "not_cloudevent", ""),
        (None, "application/json", {}, "empty_value", ""),
        (BODY, "application/json", {"ce_type": "mlops.other"}, "unexpected_type", "ce_type"),
        (BODY, "application/json", {"ce_subject": None}, "missing_subject", "ce_subject"),
        (BODY, "text/csv", {}, "unexpected_content_type", "content-type"),
        (
            BODY,
            "application/json",
            {"ce_modelversion": "2", "ce_modelalias": "candidate"},
            "conflicting_route",
            "ce_modelalias",
        ),
        (b'{"inputs": [', "application/json", {}, "invalid_request", "body"),
        (b'{"inputs": [], "extra": 1}', "application/json", {}, "invalid_request", "extra"),
        (b"\xff\xff\xff", "application/protobuf", {}, "decode_error", ""),
        (
            oip.ModelInferRequest(model_name="other").SerializeToString(),
            "application/protobuf",
            {},
            "conflicting_model",
            "model_name",
        ),
        (b"x" * (LIMIT + 1), "application/json", {}, "too_large", ""),
    ],
)
def test_what_is_not_a_request_is_refused_with_its_reason(
    value: bytes | None, content_type: str, overrides: dict[str, str | None], error_class: str, field: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        read_request(record(value, content_type, **overrides), LIMIT)
    assert (refused.value.error_class, refused.value.field) == (error_class, field)
