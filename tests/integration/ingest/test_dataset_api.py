"""The dataset API over real gRPC: schema versions, precise errors, scopes, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2
from pymongo import AsyncMongoClient

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.clients.health import health_stub
from services.common.errors import Kind, PlatformError
from services.common.events import decode
from services.common.proto.mlops.v1.datasets_pb2 import FieldSpec, FieldType
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from tests.helpers.datasets import orders_schema
from tests.integration.ingest.conftest import Ingest


async def refusal(call: object) -> PlatformError:
    with pytest.raises(PlatformError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_schema_versions_through_the_api(ingest: Ingest, dataset: str) -> None:
    api = ingest.datasets
    first = await api.register_schema(orders_schema(dataset))
    assert (first.version, first.created_by) == (1, "tester")
    assert await api.register_schema(orders_schema(dataset)) == first  # idempotent

    compatible = orders_schema(dataset)
    compatible.fields.append(FieldSpec(name="coupon", type=FieldType.FIELD_TYPE_CATEGORY))
    assert (await api.register_schema(compatible)).version == 2

    breaking = orders_schema(dataset)
    breaking.fields.append(FieldSpec(name="coupon", type=FieldType.FIELD_TYPE_CATEGORY))
    breaking.fields.remove(next(f for f in breaking.fields if f.name == "items"))
    breaking.ClearField("derived")
    error = await refusal(api.register_schema(breaking))
    assert error.kind is Kind.FAILED_PRECONDITION
    assert "field 'items' removed" in error.message
    assert "derived feature 'per_item' removed" in error.message
    breaking.version = 3
    assert (await api.register_schema(breaking)).version == 3

    changed_v1 = orders_schema(dataset, version=1, description="edited")
    error = await refusal(api.register_schema(changed_v1))
    assert error.kind is Kind.FAILED_PRECONDITION and "immutable" in error.message
    error = await refusal(api.register_schema(orders_schema(dataset, version=7)))
    assert error.kind is Kind.INVALID and "version" in error.message

    assert (await api.get_schema(dataset)).version == 3
    assert await api.get_schema(dataset, 1) == first
    assert {s.name: s.version for s in await api.list_schemas()}[dataset] == 3
    error = await refusal(api.get_schema(dataset, 4))
    assert error.kind is Kind.NOT_FOUND

    # Events are validated against the latest version: 'items' is gone.
    now = datetime.now(UTC).isoformat()
    await ingest.send_json(
        [{"event_id": "v3-1", "customer": "c", "ts": now, "amount": 1, "items": 2}], dataset
    )
    letters = await ingest.raw_dead_letters.wait_for(lambda r: b"v3-1" in (r.value or b""), 1)
    headers = dict(letters[0].headers)
    assert (headers["dlq.error.class"], headers["dlq.error.field"]) == (b"unknown_field", b"items")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: setattr(s, "name", "no spaces allowed"), "name"),
        (
            lambda s: s.fields.append(FieldSpec(name="amount", type=FieldType.FIELD_TYPE_NUMBER)),
            "fields[7].name",
        ),
        (lambda s: setattr(s, "label_field", "customer"), "label_field"),
        (lambda s: setattr(s.derived[0], "function", "sqrt"), "derived[0].function"),
    ],
)
async def test_an_invalid_schema_is_refused_naming_the_field(
    ingest: Ingest, dataset: str, mutate: object, field: str
) -> None:
    schema = orders_schema(dataset)
    mutate(schema)  # type: ignore[operator]
    error = await refusal(ingest.datasets.register_schema(schema))
    assert (error.kind, error.field) == (Kind.INVALID, field)
    assert error.message.startswith(f"{field}:")


async def test_bad_window_requests_get_precise_errors(ingest: Ingest, dataset: str) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    api = ingest.datasets
    late, early = DataWindow(dataset=dataset), DataWindow(dataset=dataset)
    late.start_time.FromDatetime(datetime(2026, 2, 1, tzinfo=UTC))
    late.end_time.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    cases = [
        (api.read_window(DataWindow()), Kind.INVALID, "window.dataset"),
        (
            api.read_window(DataWindow(dataset="no-such-dataset")),
            Kind.NOT_FOUND,
            "no-such-dataset",
        ),
        (api.read_window(late), Kind.INVALID, "window.end_time"),
        (
            api.read_window(DataWindow(dataset=dataset, max_rows=-1)),
            Kind.INVALID,
            "window.max_rows",
        ),
        (api.read_window(early, chunk_rows=10**6), Kind.INVALID, "chunk_rows"),
        (
            api.read_window(DataWindow(dataset=dataset, min_rows=5)),
            Kind.FAILED_PRECONDITION,
            "fewer than min_rows 5",
        ),
        (api.get_schema(""), Kind.INVALID, "name"),
        (api.quality_summary("no-such-dataset"), Kind.NOT_FOUND, "no-such-dataset"),
    ]
    for call, code, detail in cases:
        error = await refusal(call)
        assert (error.kind, detail in error.message) == (code, True), error


async def test_every_call_needs_a_token_with_the_right_scope(ingest: Ingest, dataset: str) -> None:
    address = f"127.0.0.1:{ingest.app.grpc_port}"
    reader = DatasetClient(address, lambda: ingest.infra.token(Scope.READ))
    producer = DatasetClient(address, lambda: ingest.infra.token(Scope.INGEST))
    anonymous = DatasetClient(address, lambda: "not-a-token")
    try:
        error = await refusal(reader.register_schema(orders_schema(dataset)))
        assert error.kind is Kind.PERMISSION
        error = await refusal(producer.read_window(DataWindow(dataset=dataset)))
        assert error.kind is Kind.PERMISSION
        error = await refusal(anonymous.list_schemas())
        assert error.kind is Kind.UNAUTHENTICATED
        async with grpc.aio.insecure_channel(address) as channel:
            health = await health_stub(channel).Check(
                health_pb2.HealthCheckRequest(service="mlops.v1.DatasetService")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for client in (reader, producer, anonymous):
            await client.close()


async def test_retention_keeps_old_rows_out_of_windows_and_dates_their_expiry(
    ingest: Ingest, dataset: str
) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    now = datetime.now(UTC).replace(microsecond=0)
    old, recent = now - timedelta(hours=3), now - timedelta(minutes=10)
    await ingest.send_json(
        [
            {"event_id": "old", "customer": "c", "ts": old.isoformat(), "amount": 1},
            {"event_id": "recent", "customer": "c", "ts": recent.isoformat(), "amount": 2},
        ],
        dataset,
    )
    await ingest.features.wait_for(lambda r: decode(r, FeatureRow).message.dataset == dataset, 2)
    everything = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False)
    assert [r.event_id for r in everything.rows] == ["old", "recent"]

    # Retention is a compatible change: a new version, applied to the rows already stored.
    assert (
        await ingest.datasets.register_schema(orders_schema(dataset, retention_seconds=3600))
    ).version == 2
    kept = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False)
    assert [r.event_id for r in kept.rows] == ["recent"]

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(ingest.infra.mongodb_uri, tz_aware=True)
    try:
        rows = client[ingest.settings.mongodb_database]["ingest_rows"]
        indexes = await rows.index_information()
        assert any(
            spec.get("expireAfterSeconds") == 0 and spec["key"] == [("expire_at", 1)]
            for spec in indexes.values()
        )
        stored = {d["event_id"]: d["expire_at"] async for d in rows.find({"dataset": dataset})}
        assert stored == {"old": old + timedelta(hours=1), "recent": recent + timedelta(hours=1)}
    finally:
        await client.close()
