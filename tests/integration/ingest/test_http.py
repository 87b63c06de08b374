"""The HTTP batch endpoint: the raw topic's validation, answered per event; and the
read-only views of schemas and data quality."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from services.common.auth import Scope
from services.common.errors import Kind
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from tests.helpers.datasets import orders_schema
from tests.helpers.problems import problem_of
from tests.integration.ingest.conftest import Ingest


def bearer(ingest: Ingest, *scopes: Scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {ingest.infra.token(*scopes)}"}


async def test_a_batch_is_answered_event_by_event(ingest: Ingest, dataset: str) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    ts = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    good = {"dataset": dataset, "event_id": "h1", "customer": "c1", "ts": ts, "amount": 5, "label": "yes"}
    batch = [
        good,
        {**good, "event_id": "h2", "amount": -1},
        {**good, "event_id": "h3", "country": "Atlantis"},
        good,
        {**good, "dataset": "no-such-dataset"},
        "not an object",
        {**good, "event_id": "h4", "items": math.inf},
    ]
    response = await ingest.http.post(
        "/v1/events",
        content=json.dumps(batch),
        headers={**bearer(ingest, Scope.INGEST), "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1, 1, 5)
    statuses = [(r["status"], r["error_class"], r["field"]) for r in answer["results"]]
    assert statuses == [
        ("accepted", "", ""),
        ("rejected", "out_of_range", "amount"),
        ("rejected", "unknown_category", "country"),
        ("duplicate", "", ""),
        ("rejected", "unknown_dataset", "dataset"),
        ("rejected", "not_an_object", ""),
        ("rejected", "not_finite", "items"),
    ]
    assert answer["results"][0]["event_id"] == "h1"
    assert "c1" not in response.text

    again = await ingest.http.post(
        "/v1/events", json={"events": [good]}, headers=bearer(ingest, Scope.INGEST)
    )
    assert again.json()["results"][0]["status"] == "duplicate"

    window = await ingest.datasets.read_window(DataWindow(dataset=dataset))
    assert [r.event_id for r in window.rows] == ["h1"]

    quality = await ingest.http.get(f"/v1/datasets/{dataset}/quality", headers=bearer(ingest, Scope.READ))
    assert quality.status_code == 200
    summary = quality.json()
    assert (summary["accepted"], summary["duplicates"], summary["rejected"]) == ("1", "2", "3")
    assert {(i["error_class"], i["field"]) for i in summary["issues"]} == {
        ("out_of_range", "amount"),
        ("unknown_category", "country"),
        ("not_finite", "items"),
    }
    metrics = (await ingest.http.get("/metrics")).text
    assert f'mlops_ingest_rejections_total{{dataset="{dataset}",reason="out_of_range"}} 1.0' in metrics
    assert f'mlops_ingest_events_total{{dataset="{dataset}",outcome="accepted"}} 1.0' in metrics


async def test_bad_requests_are_refused_whole_with_the_reason(ingest: Ingest, dataset: str) -> None:
    headers = bearer(ingest, Scope.INGEST)
    assert (await ingest.http.post("/v1/events", json=[])).status_code == 401
    assert (
        await ingest.http.post("/v1/events", json=[], headers=bearer(ingest, Scope.READ))
    ).status_code == 403
    response = await ingest.http.post("/v1/events", content=b"{nope", headers=headers)
    assert (response.status_code, response.json()["detail"]) == (400, "body: not valid JSON")
    response = await ingest.http.post("/v1/events", json={"events": "many"}, headers=headers)
    assert (response.status_code, response.json()["field"]) == (422, "events")
    too_many: list[dict[str, str]] = [{}] * (ingest.settings.http_max_events + 1)
    response = await ingest.http.post("/v1/events", json=too_many, headers=headers)
    assert response.status_code == 413 and response.json()["detail"].startswith("events:")

    async def endless_body() -> AsyncIterator[bytes]:
        # Streamed without a Content-Length: the server must stop reading at its limit.
        yield b"["
        for _ in range(ingest.settings.http_max_body_bytes // 65536 + 2):
            yield b" " * 65536

    response = await ingest.http.post(
        "/v1/events", content=endless_body(), headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["detail"].startswith("body:")


async def test_schemas_and_quality_are_readable_over_http(ingest: Ingest, dataset: str) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    reader = bearer(ingest, Scope.READ)
    schema = (await ingest.http.get(f"/v1/datasets/{dataset}/schema", headers=reader)).json()
    assert (schema["name"], schema["version"], schema["event_id_field"]) == (dataset, 1, "event_id")
    assert dataset in {s["name"] for s in (await ingest.http.get("/v1/datasets", headers=reader)).json()}
    assert (
        await ingest.http.get(f"/v1/datasets/{dataset}/schema?version=9", headers=reader)
    ).status_code == 404
    assert (await ingest.http.get("/v1/datasets/nothing-here/quality", headers=reader)).status_code == 404
    naive = await ingest.http.get(f"/v1/datasets/{dataset}/quality?start=2026-01-01T00:00:00", headers=reader)
    assert naive.status_code == 422 and "start" in naive.text
    empty = await ingest.http.get(
        f"/v1/datasets/{dataset}/quality", params={"end": "2000-01-01T00:00:00Z"}, headers=reader
    )
    assert (empty.status_code, empty.json()["accepted"]) == (200, "0")
    assert (await ingest.http.get("/health/ready")).status_code == 200


async def test_refusals_answer_the_platform_problem_body(ingest: Ingest, dataset: str) -> None:
    reader = bearer(ingest, Scope.READ)
    missing = await ingest.http.get("/v1/datasets/nothing-here/schema", headers=reader)
    assert problem_of(missing, 404, Kind.NOT_FOUND)["detail"] == "no dataset schema 'nothing-here'"
    not_json = await ingest.http.post("/v1/events", content=b"{nope", headers=bearer(ingest, Scope.INGEST))
    assert problem_of(not_json, 400, Kind.INVALID)["field"] == "body"
    naive = await ingest.http.get(f"/v1/datasets/{dataset}/quality?start=2026-01-01T00:00:00", headers=reader)
    assert problem_of(naive, 422, Kind.INVALID)["field"] == "start"
    problem_of(await ingest.http.get("/v1/datasets"), 401, Kind.UNAUTHENTICATED)
