"""Aliases and review over gRPC, against the real database and broker: automatic promotion,
compare-and-set between concurrent promotions, approval by a distinct reviewer, rollback
through production's history, archived versions."""

from __future__ import annotations

import asyncio

import grpc

from services.common.auth import Scope
from services.common.clients.registry import MANUAL, RegistryClient
from services.common.errors import Conflict, PlatformError
from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.registry.lifecycle import PENDING, READY
from tests.helpers.artifacts import model_bytes
from tests.integration.registry.conftest import ClientFactory, ModelEvents
from tests.integration.registry.helpers import expect_status, metadata


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
