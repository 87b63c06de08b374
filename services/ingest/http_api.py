"""HTTP adapter (FastAPI): batches of events in, with the same validation as the raw topic,
and read-only views of schemas and data quality.

``POST /v1/events`` answers per event: ``accepted``, ``duplicate`` or ``rejected`` with
the reason and field. A refused event is answered, counted and summarised, but not
dead-lettered: the caller holds it and has been told why. A refused request is answered
with the platform's problem-details body.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from google.protobuf import json_format
from pydantic import AwareDatetime, BaseModel, Field

from services.common.auth import Principal, Scope, TokenVerifier
from services.common.errors import InvalidArgument, TooLarge, Unavailable
from services.common.http import create_app, require_scope
from services.common.http_errors import problem_responses
from services.common.kafka import is_transient
from services.common.logging import get_logger
from services.ingest.datasets import Datasets
from services.ingest.formats import Decoded, Encoding, event_from_object
from services.ingest.pipeline import IngestPipeline, Outcome, Status, Submission
from services.ingest.settings import IngestSettings
from services.ingest.validation import Reason, Rejection

log = get_logger(__name__)

Ingester = Annotated[Principal, Depends(require_scope(Scope.INGEST))]
Reader = Annotated[Principal, Depends(require_scope(Scope.READ))]


class EventResult(BaseModel):
    index: int = Field(description="Position of the event in the batch.")
    status: Status
    event_id: str = ""
    error_class: str = Field("", description="Why the event was rejected (missing_field, wrong_type, ...).")
    field: str = Field("", description="The field at fault; empty when the whole event is.")
    reason: str = ""


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


EVENTS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "items": {"type": "object"}},
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {"events": {"type": "array", "items": {"type": "object"}}},
                        },
                    ]
                },
                "example": [
                    {"dataset": "demo", "event_id": "e1", "ts": "2026-11-26T10:00:00Z", "f0": 0.3, "label": 1}
                ],
            }
        },
    }
}


def _result(index: int, outcome: Outcome) -> EventResult:
    rejection = outcome.rejection
    return EventResult(
        index=index,
        status=outcome.status,
        event_id=outcome.event_id,
        error_class=rejection.error_class if rejection else "",
        field=rejection.field if rejection else "",
        reason=rejection.message if rejection else "",
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body: larger than {limit} bytes", field="body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"body: larger than {limit} bytes", field="body")
    return bytes(body)


def create_http_app(
    pipeline: IngestPipeline,
    datasets: Datasets,
    settings: IngestSettings,
    verifier: TokenVerifier,
    *,
    ready: Callable[[], bool],
    problems: Callable[[], Sequence[str]] = lambda: (),
) -> FastAPI:
    app = create_app(
        "MLOps ingest",
        "1.0",
        verifier=verifier,
        ready=ready,
        problems=problems,
        description="Batches of raw events in, validated like the raw topic's; schemas and data quality out.",
    )
    body_limit = settings.http_max_body_bytes

    @app.post(
        "/v1/events",
        tags=["events"],
        summary="Ingest a batch of events; the answer says what became of each.",
        response_model=BatchResult,
        openapi_extra=EVENTS_BODY,
        responses=problem_responses(
            {
                400: "The body is not JSON.",
                413: "Too many events or too many bytes.",
                422: "The body is not a list of events.",
                503: "The database or the broker is away; retry later.",
            }
        ),
    )
    async def ingest_events(request: Request, principal: Ingester) -> BatchResult:
        body = await _read_body(request, body_limit)
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidArgument("body: not valid JSON", field="body") from None
        events = parsed.get("events") if isinstance(parsed, dict) else parsed
        if not isinstance(events, list):
            # FastAPI's answer to a body of the wrong shape (422), as if it had parsed this one.
            raise RequestValidationError(
                [
                    {
                        "type": "list_type",
                        "loc": ("body", "events"),
                        "msg": "must be a list of event objects (or the body itself a list)",
                    }
                ]
            )
        if len(events) > settings.http_max_events:
            raise TooLarge(
                f"events: at most {settings.http_max_events} per batch, got {len(events)}", field="events"
            )
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        try:
            # Admitting reads each dataset's team from the database too.
            submissions = [
                Submission(await _admitted(_decode(item), principal, datasets), f"http/{request_id}/{index}")
                for index, item in enumerate(events)
            ]
            outcomes = await pipeline.ingest(submissions)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("http_ingest_unavailable", error=type(exc).__name__)
            raise Unavailable("storage or broker unavailable; retry") from None
        results = [_result(index, outcome) for index, outcome in enumerate(outcomes)]
        return BatchResult(
            accepted=sum(r.status is Status.ACCEPTED for r in results),
            duplicates=sum(r.status is Status.DUPLICATE for r in results),
            rejected=sum(r.status is Status.REJECTED for r in results),
            results=results,
        )

    @app.get("/v1/datasets", tags=["datasets"], summary="The latest schema of every dataset.")
    async def list_datasets(principal: Reader) -> list[dict[str, Any]]:
        return [_json(schema) for schema in await datasets.list_schemas(principal)]

    @app.get(
        "/v1/datasets/{name}/schema",
        tags=["datasets"],
        summary="One version of a dataset's schema (the latest when version is 0).",
        responses=problem_responses({404: "No such dataset or version."}),
    )
    async def get_schema(
        name: str, principal: Reader, version: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0
    ) -> dict[str, Any]:
        return _json(await datasets.get_schema(name, version, principal))

    @app.get(
        "/v1/datasets/{name}/quality",
        tags=["datasets"],
        summary="Accepted, duplicate and rejected events (by reason and field) processed in [start, end).",
        responses=problem_responses({400: "end is before start.", 404: "No such dataset."}),
    )
    async def quality(
        name: str,
        principal: Reader,
        start: Annotated[AwareDatetime | None, Query(description="ISO-8601 with offset; inclusive.")] = None,
        end: Annotated[AwareDatetime | None, Query(description="ISO-8601 with offset; exclusive.")] = None,
    ) -> dict[str, Any]:
        summary = await datasets.quality_summary(name, start, end, principal)
        return json_format.MessageToDict(
            summary, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    return app


async def _admitted(
    decoded: Decoded | Rejection, caller: Principal, datasets: Datasets
) -> Decoded | Rejection:
    """``decoded``, unless it names a dataset the caller may not send events to: then the
    refusal an unknown dataset gets (another team's dataset names do not leak)."""
    if isinstance(decoded, Decoded) and not await datasets.may_ingest(decoded.event.dataset, caller):
        name = decoded.event.dataset[:128]
        return Rejection(Reason.UNKNOWN_DATASET, "dataset", f"no dataset named {name!r} is registered")
    return decoded


def _decode(item: Any) -> Decoded | Rejection:
    if not isinstance(item, dict):
        return Rejection(
            Reason.NOT_AN_OBJECT, "", f"an event must be a JSON object, got {type(item).__name__}"
        )
    size = len(json.dumps(item, default=str).encode())
    event = event_from_object(item)
    return event if isinstance(event, Rejection) else Decoded(event, Encoding.JSON, size)


def _json(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result
