"""The registry's gRPC API against the real database and broker: precise statuses, access
control and the audit trail, lineage and search, pages, specs, and errors' kind and field
in trailing metadata. Versions and aliases have modules of their own."""

from __future__ import annotations

import json

import grpc
import pytest

from services.common.artifacts import sha256_hex
from services.common.auth import Principal, Scope
from services.common.clients.registry import RegistryClient
from services.common.errors import FIELD_METADATA, KIND_METADATA, PlatformError
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.registry.app import RegistryApp
from services.registry.registry import Actor
from tests.helpers.artifacts import model_bytes
from tests.integration.registry.conftest import ClientFactory
from tests.integration.registry.helpers import expect_status, metadata


@pytest.mark.parametrize(
    "bad_name",
    [
        "../etc/passwd",
        "a/b",
        "a\\b",
        "bad\nname",
        "tab\there",
        "x" * 129,
        "",
        "-leading",
        "nul\x00byte",
        "ünïcode",
    ],
)
async def test_malformed_model_names_are_refused(admin: RegistryClient, bad_name: str) -> None:
    error = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.create_model(bad_name))
    assert "name" in error.message
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.get_model(bad_name))
    await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        admin.create_version(metadata(bad_name, model_bytes("artifact")), model_bytes("artifact")),
    )


async def test_unknown_and_duplicate_things_get_precise_statuses(
    admin: RegistryClient, model_name: str
) -> None:
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.get_model(model_name))
    error = await expect_status(
        grpc.StatusCode.NOT_FOUND,
        admin.create_version(metadata(model_name, model_bytes("data")), model_bytes("data")),
    )
    assert "create it first" in error.message
    await admin.create_model(model_name)
    await expect_status(grpc.StatusCode.ALREADY_EXISTS, admin.create_model(model_name))
    assert (await admin.create_model(model_name, exist_ok=True)).name == model_name
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.get_version(model_name, 3))
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.get_version(model_name, alias="production"))
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.set_alias(model_name, "production", 3))
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.set_alias(model_name, "Prod/../x", 1))
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.get_version(model_name))
    nan_metric = metadata(model_name, model_bytes("data"), metrics={"accuracy": float("nan")})
    error = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(nan_metric, model_bytes("data"))
    )
    assert "metadata.metrics[accuracy]" in error.message
    assert (await admin.get_model(model_name)).latest_version == 0


async def test_tokens_and_scopes_are_enforced_and_denials_audited(
    clients: ClientFactory, admin: RegistryClient, registry_app: RegistryApp, model_name: str
) -> None:
    await admin.create_model(model_name)
    await admin.create_version(metadata(model_name, model_bytes("x1"), evaluated=False), model_bytes("x1"))
    reader = clients(Scope.READ, subject="reader")
    async with RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: "not-a-jwt") as forged:
        await expect_status(grpc.StatusCode.UNAUTHENTICATED, forged.get_model(model_name))
    async with RegistryClient(f"127.0.0.1:{registry_app.grpc_port}", lambda: "") as anonymous:
        await expect_status(grpc.StatusCode.UNAUTHENTICATED, anonymous.list_models())

    assert (await reader.get_model(model_name)).name == model_name
    await expect_status(
        grpc.StatusCode.PERMISSION_DENIED,
        reader.set_alias(model_name, "production", 1, request_id=f"{model_name}-deny"),
    )
    await expect_status(grpc.StatusCode.PERMISSION_DENIED, reader.create_model(model_name + "x"))
    await expect_status(grpc.StatusCode.PERMISSION_DENIED, reader.audit_log())
    writer = clients(Scope.WRITE, subject="writer")
    await expect_status(grpc.StatusCode.PERMISSION_DENIED, writer.approve(model_name, 1))

    assert (await admin.get_model(model_name)).aliases == {}
    denied = await admin.audit_log(registry_pb2.ListAuditRecordsRequest(request_id=f"{model_name}-deny"))
    assert len(denied.records) == 1
    record = denied.records[0]
    assert (record.actor, record.action, record.outcome) == ("reader", "SetAlias", "denied")
    assert "lacks scope 'promote'" in record.detail
    anonymous_denials = await admin.audit_log(
        registry_pb2.ListAuditRecordsRequest(
            actor="anonymous", action="ListModels", outcome="unauthenticated"
        )
    )
    assert anonymous_denials.records


async def test_every_change_is_audited_with_before_and_after(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    await admin.create_version(
        metadata(model_name, model_bytes("b1")), model_bytes("b1"), request_id=f"{model_name}-v1"
    )
    await admin.create_version(metadata(model_name, model_bytes("b2")), model_bytes("b2"))
    await admin.set_alias(
        model_name,
        "production",
        1,
        expected_version=2,
        reason="v2 misbehaves",
        request_id=f"{model_name}-set",
    )
    await expect_status(
        grpc.StatusCode.ABORTED, admin.set_alias(model_name, "production", 2, expected_version=2)
    )

    log = await admin.audit_log(registry_pb2.ListAuditRecordsRequest(resource_prefix=f"models/{model_name}"))
    records = list(reversed(log.records))
    summary = [(r.action, r.resource.removeprefix(f"models/{model_name}"), r.outcome) for r in records]
    assert summary == [
        ("CreateModel", "", "ok"),
        ("CreateModelVersion", "/versions/1", "ok"),
        ("CreateModelVersion", "/aliases/production", "ok"),
        ("CreateModelVersion", "/versions/2", "ok"),
        ("CreateModelVersion", "/aliases/production", "ok"),
        ("SetAlias", "/aliases/production", "ok"),
        ("SetAlias", "/aliases/production", "aborted"),
    ]
    by_request = await admin.audit_log(registry_pb2.ListAuditRecordsRequest(request_id=f"{model_name}-v1"))
    assert {r.resource.rsplit("/", 1)[-1] for r in by_request.records} == {"1", "production"}
    manual_move = records[5]
    assert json.loads(manual_move.before_json) == {"version": 2}
    assert json.loads(manual_move.after_json) == {"version": 1}
    assert manual_move.actor == "admin" and "v2 misbehaves" in manual_move.detail
    assert manual_move.request_id == f"{model_name}-set"


async def test_lineage_answers_both_ways_and_search_filters(admin: RegistryClient, model_name: str) -> None:
    other = model_name + "-shadow"
    await admin.create_model(model_name, tags={"team": "risk"})
    await admin.create_model(other)
    shared = "cd" * 32
    await admin.create_version(
        metadata(
            model_name,
            model_bytes("l1"),
            content_sha256=shared,
            metrics={"accuracy": 0.7},
            train_request_id="req-1",
        ),
        model_bytes("l1"),
    )
    await admin.create_version(
        metadata(
            model_name,
            model_bytes("l2"),
            parent_version=1,
            metrics={"accuracy": 0.85},
            tags={"stage": "exp"},
            content_sha256=sha256_hex(model_name.encode()),
        ),
        model_bytes("l2"),
    )
    await admin.create_version(
        metadata(model_name, model_bytes("l3"), parent_version=2, metrics={"accuracy": 0.95}),
        model_bytes("l3"),
    )
    await admin.create_version(
        metadata(other, model_bytes("o1"), content_sha256=shared, dataset="other-data"), model_bytes("o1")
    )

    lineage = await admin.lineage(model_name, 2)
    assert lineage.version.lineage.parent_version == 1
    assert [v.version for v in lineage.ancestors] == [1]
    assert [v.version for v in lineage.children] == [3]
    assert not lineage.same_data
    root = await admin.lineage(model_name, 1)
    assert [(v.model_name, v.version) for v in root.same_data] == [(other, 1)]
    deepest = await admin.lineage(model_name, alias="production")
    assert [v.version for v in deepest.ancestors] == [2, 1]

    def search(**fields: object) -> registry_pb2.SearchModelVersionsRequest:
        return registry_pb2.SearchModelVersionsRequest(**fields)  # type: ignore[arg-type]

    same_data = await admin.search_versions(search(content_sha256=shared))
    assert {(v.model_name, v.version) for v in same_data} == {(model_name, 1), (other, 1)}
    good = await admin.search_versions(
        search(
            model_name=model_name,
            metrics=[registry_pb2.MetricFilter(name="accuracy", op=registry_pb2.COMPARISON_GE, value=0.8)],
        )
    )
    assert [v.version for v in good] == [3, 2]
    assert [
        v.version for v in await admin.search_versions(search(model_name=model_name, tags={"stage": "exp"}))
    ] == [2]
    assert [v.version for v in await admin.search_versions(search(train_request_id="req-1"))] == [1]
    in_production = await admin.search_versions(search(model_name=model_name, alias="production"))
    assert [v.version for v in in_production] == [3]
    assert [
        m.name for m in await admin.list_models(tags={"team": "risk"}, name_contains=model_name.upper())
    ] == [model_name]
    await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        admin.search_versions(search(metrics=[registry_pb2.MetricFilter(name="accuracy", value=1.0)])),
    )


async def test_pages_cover_everything_once(
    admin: RegistryClient, model_name: str, registry_app: RegistryApp
) -> None:
    await admin.create_model(model_name)
    for i in range(5):
        await admin.create_version(
            metadata(model_name, model_bytes(f"p{i}"), evaluated=False), model_bytes(f"p{i}")
        )
    assert registry_app.registry is not None
    actor = Actor(Principal.of("admin", [Scope.ADMIN]))
    seen: list[int] = []
    token = ""
    while True:
        page = await registry_app.registry.list_versions(actor, model_name, page_size=2, page_token=token)
        seen += [v.version for v in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    from services.registry.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        await registry_app.registry.list_versions(actor, model_name, page_token="garbage!")


async def test_specs_are_versioned(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    spec = model_pb2.ModelSpec(
        model_name=model_name,
        dataset="demo",
        features=["f0", "f1"],
        target="label",
        task=model_pb2.TASK_CLASSIFICATION,
        metric="accuracy",
        estimators=[model_pb2.EstimatorSpec(family="logistic_regression", params_json='{"C": 1.0}')],
        holdout_fraction=0.2,
    )
    first = await admin.put_spec(spec)
    spec.metric = "f1"
    second = await admin.put_spec(spec)
    assert (first.spec_version, second.spec_version) == (1, 2)
    assert (await admin.get_spec(model_name)).metric == "f1"
    assert (await admin.get_spec(model_name, 1)).metric == "accuracy"
    assert [s.spec_version for s in await admin.list_specs(model_name)] == [2, 1]
    assert (await admin.get_model(model_name)).latest_spec_version == 2

    spec.estimators[0].params_json = "[1, 2"
    error = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.put_spec(spec))
    assert "spec.estimators[0].params_json" in error.message
    spec.estimators[0].params_json = "{}"
    spec.holdout_fraction = float("inf")
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.put_spec(spec))
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.get_spec(model_name, 9))
    spec.model_name = model_name + "-missing"
    spec.holdout_fraction = 0.2
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.put_spec(spec))


async def test_errors_carry_their_kind_and_field_in_trailing_metadata(
    admin: RegistryClient, model_name: str
) -> None:
    def trailers(error: PlatformError) -> dict[str, str]:
        call = error.__cause__  # the client keeps the failed call as the cause
        assert isinstance(call, grpc.aio.AioRpcError)
        return {key: str(value) for key, value in call.trailing_metadata() or ()}

    invalid = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.create_model("a/b"))
    assert trailers(invalid) == {KIND_METADATA: "invalid", FIELD_METADATA: "name"}
    missing = await expect_status(grpc.StatusCode.NOT_FOUND, admin.get_model(model_name))
    assert trailers(missing) == {KIND_METADATA: "not_found"}
    await admin.create_model(model_name)
    await admin.create_version(metadata(model_name, model_bytes("k1")), model_bytes("k1"))
    lost = await expect_status(
        grpc.StatusCode.ABORTED, admin.set_alias(model_name, "production", 1, expected_version=-1)
    )
    assert trailers(lost)[KIND_METADATA] == "conflict"
    oversized = metadata(model_name, model_bytes("k2"))
    oversized.artifact.size_bytes = 10**10
    too_large = await expect_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, admin.create_version(oversized, model_bytes("k2"))
    )
    assert trailers(too_large) == {KIND_METADATA: "too_large", FIELD_METADATA: "metadata.artifact.size_bytes"}
    # A field quoting what the caller sent stays printable ASCII, as metadata must.
    unicode_metric = metadata(model_name, model_bytes("k3"), metrics={"genauigkeit-ü": 0.9})
    quoted = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(unicode_metric, model_bytes("k3"))
    )
    assert trailers(quoted)[FIELD_METADATA] == "metadata.metrics[genauigkeit-\\xfc]"
