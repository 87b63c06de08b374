"""The registry's gRPC API against the real database and broker: lifecycle, events,
compare-and-set, trust in artifacts, access control and the audit trail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from services.common.artifacts import sha256_hex, sign
from services.common.auth import Scope
from services.common.clients.registry import MANUAL, RegistryClient
from services.common.errors import FIELD_METADATA, KIND_METADATA, Conflict, PlatformError
from services.common.grpc_errors import translating
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2
from services.registry.app import RegistryApp
from tests.helpers.artifacts import artifact_of, model_bytes, opened, random_artifact
from tests.integration.registry.conftest import SIGNING_KEY, ClientFactory, ModelEvents
from tests.integration.registry.helpers import DATA_HASH, metadata

READY = registry_pb2.VERSION_STATUS_READY
PENDING = registry_pb2.VERSION_STATUS_PENDING_APPROVAL


async def expect_status(code: grpc.StatusCode, call: object) -> PlatformError:
    """The platform error the registry client raises for ``call``, of the kind ``code`` names."""
    with pytest.raises(PlatformError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.kind.grpc_code == code.name, caught.value.message
    return caught.value


async def artifact_files(app: RegistryApp) -> int:
    assert app.registry is not None
    db = app.registry._store.db
    return await db["artifacts.files"].count_documents({})


async def test_register_promote_and_download_a_real_model(
    admin: RegistryClient, model_name: str, model_events: ModelEvents
) -> None:
    model = await admin.create_model(model_name, "churn", tags={"team": "risk"})
    assert model.promotion_policy == registry_pb2.PROMOTION_POLICY_AUTO
    estimator = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]], [0, 1, 1, 0])
    artifact = artifact_of(estimator)

    version = await admin.create_version(metadata(model_name, artifact), artifact)

    assert (version.version, version.status, list(version.aliases)) == (1, READY, ["production"])
    assert version.created_by == "admin"
    assert version.lineage.data.content_sha256 == DATA_HASH
    by_alias = await admin.get_version(model_name, alias="production")
    assert by_alias.version == 1 and by_alias.metrics["accuracy"] == pytest.approx(0.9)
    downloaded, data = await admin.download_artifact(model_name, alias="production")
    assert data == artifact and downloaded.artifact.sha256 == version.artifact.sha256
    loaded = opened(downloaded.artifact.format, data)
    rows = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert list(loaded.predict(rows)) == list(estimator.predict(rows))

    events = await model_events.wait_until(
        lambda evs: any(
            e.model_name == model_name and e.type == events_pb2.MODEL_EVENT_TYPE_ALIAS_SET for e in evs
        )
    )
    mine = [e for e in events if e.model_name == model_name]
    assert [e.type for e in mine] == [
        events_pb2.MODEL_EVENT_TYPE_MODEL_CREATED,
        events_pb2.MODEL_EVENT_TYPE_VERSION_CREATED,
        events_pb2.MODEL_EVENT_TYPE_ALIAS_SET,
    ]
    promoted = mine[-1]
    assert (promoted.version, promoted.alias, promoted.previous_version, promoted.actor) == (
        1,
        "production",
        0,
        "admin",
    )


async def test_auto_promotion_moves_production_and_reports_the_previous_version(
    admin: RegistryClient, model_name: str, model_events: ModelEvents
) -> None:
    await admin.create_model(model_name)
    first = await admin.create_version(metadata(model_name, model_bytes("v1")), model_bytes("v1"))
    failed = await admin.create_version(
        metadata(model_name, model_bytes("v2"), gates_passed=False), model_bytes("v2")
    )
    unevaluated = await admin.create_version(
        metadata(model_name, model_bytes("v3"), evaluated=False), model_bytes("v3")
    )
    second = await admin.create_version(
        metadata(model_name, model_bytes("v4"), parent_version=1), model_bytes("v4")
    )

    assert failed.status == registry_pb2.VERSION_STATUS_GATES_FAILED and not failed.aliases
    assert unevaluated.status == READY and not unevaluated.aliases
    assert (first.version, second.version) == (1, 4)
    model = await admin.get_model(model_name)
    assert dict(model.aliases) == {"production": 4} and model.latest_version == 4
    events = await model_events.wait_until(
        lambda evs: any(e.model_name == model_name and e.alias and e.version == 4 for e in evs)
    )
    alias_moves = [(e.version, e.previous_version) for e in events if e.model_name == model_name and e.alias]
    assert alias_moves == [(1, 0), (4, 1)]


async def test_versions_are_numbered_without_gaps_under_concurrency(
    admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name)
    payloads = [random_artifact(200) for _ in range(12)]

    created = await asyncio.gather(*(admin.create_version(metadata(model_name, p), p) for p in payloads))

    assert sorted(v.version for v in created) == list(range(1, 13))
    listed = await admin.list_versions(model_name)
    assert [v.version for v in listed] == list(range(12, 0, -1))
    by_number = {v.version: v.artifact.sha256 for v in created}
    for number in (1, 7, 12):
        _, data = await admin.download_artifact(model_name, number)
        assert (
            data in payloads
            and (await admin.get_version(model_name, number)).artifact.sha256 == by_number[number]
        )


async def test_compare_and_set_lets_exactly_one_concurrent_promotion_win(
    admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name)
    for i in range(3):
        await admin.create_version(
            metadata(model_name, model_bytes(f"a{i}"), evaluated=False), model_bytes(f"a{i}")
        )
    await admin.set_alias(model_name, "staging", 1, expected_version=-1)

    results = await asyncio.gather(
        admin.set_alias(model_name, "staging", 2, expected_version=1),
        admin.set_alias(model_name, "staging", 3, expected_version=1),
        return_exceptions=True,
    )

    winners = [r for r in results if isinstance(r, registry_pb2.Model)]
    losers = [r for r in results if isinstance(r, PlatformError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert isinstance(losers[0], Conflict)
    final = (await admin.get_model(model_name)).aliases["staging"]
    assert final == winners[0].aliases["staging"]
    assert list((await admin.get_version(model_name, final)).aliases) == ["staging"]
    assert not (await admin.get_version(model_name, 1)).aliases

    await expect_status(
        grpc.StatusCode.ABORTED, admin.set_alias(model_name, "staging", 1, expected_version=-1)
    )
    await expect_status(
        grpc.StatusCode.ABORTED, admin.delete_alias(model_name, "staging", expected_version=99)
    )
    after_delete = await admin.delete_alias(model_name, "staging", expected_version=final)
    assert "staging" not in after_delete.aliases
    await expect_status(grpc.StatusCode.NOT_FOUND, admin.delete_alias(model_name, "staging"))


async def test_artifacts_that_do_not_match_their_declaration_leave_nothing_behind(
    admin: RegistryClient, registry_app: RegistryApp, model_name: str
) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact(300_000)
    files_before = await artifact_files(registry_app)

    wrong_digest = metadata(model_name, artifact)
    wrong_digest.artifact.sha256 = "0" * 64
    error = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(wrong_digest, artifact)
    )
    assert "metadata.artifact.sha256" in error.message
    truncated = metadata(model_name, artifact)
    error = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(truncated, artifact[:-1000])
    )
    assert "truncated" in error.message
    longer = metadata(model_name, artifact)
    error = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(longer, artifact + model_bytes("x"))
    )
    assert "more than the declared" in error.message
    oversized = metadata(model_name, artifact)
    oversized.artifact.size_bytes = 10**10
    await expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, admin.create_version(oversized, artifact))

    model = await admin.get_model(model_name)
    assert model.latest_version == 0
    assert await artifact_files(registry_app) == files_before


async def test_a_corrupted_stored_artifact_is_refused_on_download(
    admin: RegistryClient, registry_app: RegistryApp, model_name: str
) -> None:
    await admin.create_model(model_name)
    flipped, cut = random_artifact(150_000), random_artifact(150_000)
    for payload in (flipped, cut):
        await admin.create_version(metadata(model_name, payload), payload)
    assert registry_app.registry is not None
    db = registry_app.registry._store.db
    chunk_size = registry_app.settings.artifact_chunk_bytes
    for payload, damage in ((flipped, b"\xff" * chunk_size), (cut, b"\0" * 10)):
        entry = await db["artifacts"].find_one({"_id": sha256_hex(payload)})
        assert entry is not None
        await db["artifacts.chunks"].update_one(
            {"files_id": entry["file_id"], "n": 1}, {"$set": {"data": damage}}
        )

    for number in (1, 2):
        error = await expect_status(grpc.StatusCode.DATA_LOSS, admin.download_artifact(model_name, number))
        assert "refusing it" in error.message


async def test_identical_artifacts_are_stored_once(
    admin: RegistryClient, registry_app: RegistryApp, model_name: str
) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact(5000)
    before = await artifact_files(registry_app)
    first = await admin.create_version(metadata(model_name, artifact), artifact)
    second = await admin.create_version(metadata(model_name, artifact), artifact)
    assert first.artifact.sha256 == second.artifact.sha256
    assert await artifact_files(registry_app) == before + 1
    assert (await admin.download_artifact(model_name, 2))[1] == artifact


async def test_river_artifacts_need_a_valid_signature(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact(2000)
    unsigned = metadata(model_name, artifact, artifact_format="river-hmac")
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(unsigned, artifact))
    forged = metadata(model_name, artifact, artifact_format="river-hmac")
    forged.signature_hmac = sign(artifact, b"not the platform key, but long enough")
    error = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, admin.create_version(forged, artifact))
    assert "metadata.signature_hmac" in error.message

    signed = metadata(model_name, artifact, artifact_format="river-hmac")
    signed.signature_hmac = sign(artifact, SIGNING_KEY.encode())
    version = await admin.create_version(signed, artifact)
    assert version.version == 1 and version.artifact.format == "river-hmac"


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


async def test_a_stream_that_does_not_start_with_metadata_is_refused(
    registry_app: RegistryApp, infra_token: str
) -> None:
    from services.common.proto.mlops.v1 import registry_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{registry_app.grpc_port}") as channel:
        stub = translating(registry_pb2_grpc.RegistryServiceStub(channel))
        metadata_ = (("authorization", f"Bearer {infra_token}"),)

        async def chunks_first() -> AsyncIterator[registry_pb2.CreateModelVersionRequest]:
            yield registry_pb2.CreateModelVersionRequest(chunk=b"abc")

        await expect_status(
            grpc.StatusCode.INVALID_ARGUMENT, stub.CreateModelVersion(chunks_first(), metadata=metadata_)
        )

        async def empty() -> AsyncIterator[registry_pb2.CreateModelVersionRequest]:
            return
            yield

        await expect_status(
            grpc.StatusCode.INVALID_ARGUMENT, stub.CreateModelVersion(empty(), metadata=metadata_)
        )


@pytest.fixture
def infra_token(infra) -> str:  # type: ignore[no-untyped-def]
    return str(infra.token(Scope.ADMIN))


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


async def test_manual_policy_waits_for_a_distinct_approver(
    clients: ClientFactory, admin: RegistryClient, model_name: str, model_events: ModelEvents
) -> None:
    await admin.create_model(model_name, policy=MANUAL)
    trainer = clients(Scope.WRITE, subject="service:trainer")
    approver = clients(Scope.APPROVE, subject="alice")
    first = await trainer.create_version(metadata(model_name, model_bytes("m1")), model_bytes("m1"))
    assert (first.status, list(first.aliases)) == (PENDING, ["candidate"])
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.set_alias(model_name, "production", 1))

    approved = await approver.approve(model_name, 1, "looks good")
    assert approved.status == registry_pb2.VERSION_STATUS_APPROVED
    assert list(approved.aliases) == ["production"]
    assert (approved.review.reviewer, approved.review.comment) == ("alice", "looks good")
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, approver.approve(model_name, 1))

    second = await trainer.create_version(metadata(model_name, model_bytes("m2")), model_bytes("m2"))
    error = await expect_status(grpc.StatusCode.INVALID_ARGUMENT, approver.reject(model_name, 2, ""))
    assert "comment" in error.message
    rejected = await approver.reject(model_name, second.version, "worse on the holdout slice for segment B")
    assert rejected.status == registry_pb2.VERSION_STATUS_REJECTED and not rejected.aliases
    assert (await admin.get_model(model_name)).aliases == {"production": 1}
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.set_alias(model_name, "staging", 2))

    self_made = await clients(Scope.WRITE, Scope.APPROVE, subject="bob").create_version(
        metadata(model_name, model_bytes("m3")), model_bytes("m3")
    )
    error = await expect_status(
        grpc.StatusCode.PERMISSION_DENIED,
        clients(Scope.APPROVE, subject="bob").approve(model_name, self_made.version),
    )
    assert "four-eyes" in error.message

    events = await model_events.wait_until(
        lambda evs: any(
            e.model_name == model_name and e.type == events_pb2.MODEL_EVENT_TYPE_VERSION_REJECTED for e in evs
        )
    )
    kinds = [(e.type, e.version, e.alias) for e in events if e.model_name == model_name][1:]
    assert kinds[:5] == [
        (events_pb2.MODEL_EVENT_TYPE_VERSION_CREATED, 1, ""),
        (events_pb2.MODEL_EVENT_TYPE_ALIAS_SET, 1, "candidate"),
        (events_pb2.MODEL_EVENT_TYPE_VERSION_APPROVED, 1, ""),
        (events_pb2.MODEL_EVENT_TYPE_ALIAS_DELETED, 1, "candidate"),
        (events_pb2.MODEL_EVENT_TYPE_ALIAS_SET, 1, "production"),
    ]


async def test_rollback_walks_back_through_production_history(admin: RegistryClient, model_name: str) -> None:
    await admin.create_model(model_name)
    for i in range(1, 4):
        await admin.create_version(metadata(model_name, model_bytes(f"r{i}")), model_bytes(f"r{i}"))
    assert (await admin.get_model(model_name)).aliases["production"] == 3

    first = await admin.rollback(model_name, reason="v3 drops accuracy")
    assert (first.from_version, first.to_version, first.model.aliases["production"]) == (3, 2, 2)
    assert (await admin.get_version(model_name, 3)).rolled_back
    await expect_status(grpc.StatusCode.ABORTED, admin.rollback(model_name, expected_version=3))
    second = await admin.rollback(model_name, expected_version=2)
    assert (second.from_version, second.to_version) == (2, 1)
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.rollback(model_name))

    history = await admin.alias_history(model_name, "production")
    assert [(c.version, c.previous_version, c.action) for c in history] == [
        (1, 2, "rollback"),
        (2, 3, "rollback"),
        (3, 2, "auto_promote"),
        (2, 1, "auto_promote"),
        (1, 0, "auto_promote"),
    ]
    assert history[1].reason == "v3 drops accuracy"


async def test_archived_versions_keep_their_record_but_take_no_alias(
    admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name)
    await admin.create_version(metadata(model_name, model_bytes("z1")), model_bytes("z1"))
    await admin.create_version(metadata(model_name, model_bytes("z2")), model_bytes("z2"))
    error = await expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.archive(model_name, 2))
    assert "production" in error.message
    archived = await admin.archive(model_name, 1, "superseded")
    assert archived.status == registry_pb2.VERSION_STATUS_ARCHIVED
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.set_alias(model_name, "staging", 1))
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, admin.archive(model_name, 1))
    assert (await admin.download_artifact(model_name, 1))[1] == model_bytes("z1")


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
    seen: list[int] = []
    token = ""
    while True:
        page = await registry_app.registry.list_versions(model_name, page_size=2, page_token=token)
        seen += [v.version for v in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    from services.registry.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        await registry_app.registry.list_versions(model_name, page_token="garbage!")


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
