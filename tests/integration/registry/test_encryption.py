"""Artifacts encrypted at rest in the real database: chunks are not plaintext, downloads
authenticate, decrypt and verify, and rotating the key-encryption key leaves every version
loadable by a registry that holds only the new key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from services.common.artifacts import sha256_hex
from services.common.clients.registry import RegistryClient
from services.common.mongo import create_client
from services.registry import keys
from services.registry.app import RegistryApp
from services.registry.errors import ArtifactCorrupt
from services.registry.store import Store
from tests.conftest import Infra
from tests.helpers.artifacts import random_artifact
from tests.integration.registry.conftest import ARTIFACT_KEY, ARTIFACT_KEY_ID, settings_for
from tests.integration.registry.helpers import metadata


async def stored_bytes(app: RegistryApp, sha256: str) -> bytes:
    assert app.registry is not None
    db = app.registry._store.db
    entry = await db["artifacts"].find_one({"_id": sha256})
    assert entry is not None
    chunks = db["artifacts.chunks"].find({"files_id": entry["file_id"]}).sort("n", 1)
    return b"".join([bytes(chunk["data"]) async for chunk in chunks])


async def test_chunks_in_the_database_are_not_the_artifact(
    admin: RegistryClient, registry_app: RegistryApp, model_name: str
) -> None:
    await admin.create_model(model_name)
    artifact = random_artifact(200_000)
    version = await admin.create_version(metadata(model_name, artifact), artifact)
    stored = await stored_bytes(registry_app, version.artifact.sha256)

    # Every 64-byte window of the artifact would be found in plaintext storage; none is.
    assert not any(artifact[i : i + 64] in stored for i in range(0, len(artifact) - 64, 4096))
    assert len(stored) > len(artifact)  # a tag per record
    assert registry_app.registry is not None
    entry = await registry_app.registry._store.db["artifacts"].find_one({"_id": version.artifact.sha256})
    assert entry is not None and entry["encryption"]["key_id"] == ARTIFACT_KEY_ID
    # The digest is the plaintext's, and the download is the plaintext.
    assert version.artifact.sha256 == sha256_hex(artifact)
    _, data = await admin.download_artifact(model_name, version.version)
    assert data == artifact


@pytest.fixture
async def database_name(infra: Infra) -> AsyncIterator[str]:
    name = "rot" + secrets.token_hex(4)
    yield name
    client = create_client(settings_for(infra, name), "test")
    await client.drop_database(name)
    await client.close()


async def test_rotation_leaves_every_version_loadable_under_the_new_key_alone(
    infra: Infra, database_name: str, admin: RegistryClient
) -> None:
    old_ring = json.dumps({ARTIFACT_KEY_ID: ARTIFACT_KEY})
    app = RegistryApp(settings_for(infra, database_name, artifact_keys=old_ring))
    await app.start()
    try:
        token = infra.token("admin", subject="admin")
        async with RegistryClient(f"127.0.0.1:{app.grpc_port}", lambda: token) as client:
            await client.create_model("rotated")
            artifacts = [random_artifact(70_000 + i) for i in range(3)]
            for artifact in artifacts:
                await client.create_version(metadata("rotated", artifact), artifact)
    finally:
        await app.stop()

    new_key = base64.b64encode(secrets.token_bytes(32)).decode()
    both = json.dumps({ARTIFACT_KEY_ID: ARTIFACT_KEY, "next": new_key})
    rewrapped, usage = await keys.rotate(
        settings_for(infra, database_name, artifact_keys=both, artifact_key_id="next")
    )
    assert rewrapped == 3 and usage.by_key_id == {"next": 3}
    # The operator's command, run again: nothing left to re-wrap.
    environment = {
        **infra.env("mlops", database_name),
        "REGISTRY_ARTIFACT_KEYS": both,
        "REGISTRY_ARTIFACT_KEY_ID": "next",
    }
    again = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "keys", "rotate", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **environment},
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"rewrapped": 0, "active_key_id": "next", "artifacts": {"next": 3}}

    # A registry holding only the new key reads every version back, digest verified.
    only_new = settings_for(infra, database_name, artifact_keys=json.dumps({"next": new_key}))
    store = Store.open(only_new)
    try:
        for artifact in artifacts:
            data = b"".join([chunk async for chunk in store.artifacts.read(sha256_hex(artifact))])
            assert data == artifact
    finally:
        await store.close()
    # And the old key alone no longer opens them: the data keys really moved.
    old_only = Store.open(settings_for(infra, database_name, artifact_keys=old_ring))
    try:
        with pytest.raises(ArtifactCorrupt, match="'next'"):
            async for _ in old_only.artifacts.read(sha256_hex(artifacts[0])):
                pass
    finally:
        await old_only.close()
