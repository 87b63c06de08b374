"""Versions and their artifacts over gRPC, against the real database and broker: numbered
without gaps, downloaded as registered, and refused (leaving nothing behind) when the bytes
do not match what was declared or a signature is missing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from services.common.artifacts import sha256_hex, sign
from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.grpc_errors import translating
from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.registry.app import RegistryApp
from services.registry.lifecycle import READY
from tests.conftest import Infra
from tests.helpers.artifacts import artifact_of, model_bytes, opened, random_artifact
from tests.integration.registry.conftest import SIGNING_KEY, ModelEvents
from tests.integration.registry.helpers import DATA_HASH, expect_status, metadata


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


@pytest.fixture
def infra_token(infra: Infra) -> str:
    return str(infra.token(Scope.ADMIN))


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
