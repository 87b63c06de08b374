"""What the registry does when things go wrong around it: a broker that is away when
changes happen, uploads a crash interrupted, a transaction a killed process left open."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bson import ObjectId

from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.errors import Unavailable
from services.common.events import Topics
from services.common.localstack import free_port, start_kafka, start_mongo
from services.common.proto.mlops.v1 import events_pb2
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.apps import started
from tests.helpers.artifacts import model_bytes, random_artifact
from tests.helpers.kafka import TopicReader
from tests.integration.registry.conftest import settings_for
from tests.integration.registry.helpers import metadata

pytestmark = pytest.mark.faults  # slow: `make test-faults` runs it, and CI


async def test_changes_made_while_the_broker_is_away_are_published_when_it_returns(
    infra: Infra, model_name: str
) -> None:
    kafka_port = free_port()
    name = "away" + uuid.uuid4().hex[:8]
    app = RegistryApp(settings_for(infra, name, kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}"))
    await app.start()
    kafka = None
    try:
        token = infra.token(Scope.ADMIN)
        async with RegistryClient(f"127.0.0.1:{app.grpc_port}", lambda: token) as client:
            await client.create_model(model_name)
            version = await client.create_version(
                metadata(model_name, model_bytes("offline")), model_bytes("offline")
            )
        assert list(version.aliases) == ["production"], "the registry works without the broker"

        kafka = start_kafka(kafka_port, log_path=infra.logs / f"kafka-{name}.log")
        reader = TopicReader(f"127.0.0.1:{kafka_port}", Topics(name).model_events, events_pb2.ModelEvent)
        await reader.start()
        try:
            events = await reader.wait_until(lambda evs: len(evs) >= 3, within=30)
        finally:
            await reader.stop()
        assert [e.type for e in events] == [
            events_pb2.MODEL_EVENT_TYPE_MODEL_CREATED,
            events_pb2.MODEL_EVENT_TYPE_VERSION_CREATED,
            events_pb2.MODEL_EVENT_TYPE_ALIAS_SET,
        ]
        assert len({e.id for e in reader.envelopes}) == 3, "each event keeps its CloudEvents id"
    finally:
        await app.stop()
        if kafka is not None:
            kafka.stop()


async def test_what_interrupted_uploads_left_behind_is_swept(
    registry_app: RegistryApp, admin: RegistryClient, model_name: str
) -> None:
    await admin.create_model(model_name)
    kept = random_artifact(2000)
    await admin.create_version(metadata(model_name, kept), kept)
    assert registry_app.registry is not None
    store = registry_app.registry._store
    artifacts = registry_app.registry._artifacts
    db = store.db
    long_ago = datetime.now(UTC) - timedelta(days=1)
    # A crash after the bytes were stored but before the version was committed ...
    unreferenced = ObjectId.from_datetime(long_ago)
    await db["artifacts.files"].insert_one(
        {"_id": unreferenced, "length": 1, "chunkSize": 1, "filename": "x"}
    )
    await db["artifacts.chunks"].insert_one({"files_id": unreferenced, "n": 0, "data": b"x"})
    # ... and a crash in the middle of storing them (chunks without their file).
    headless = ObjectId.from_datetime(long_ago - timedelta(seconds=1))
    await db["artifacts.chunks"].insert_one({"files_id": headless, "n": 0, "data": b"y"})
    # An upload in progress right now must survive.
    in_progress = ObjectId()
    await db["artifacts.chunks"].insert_one({"files_id": in_progress, "n": 0, "data": b"z"})

    removed = await artifacts.sweep_orphans(timedelta(hours=1))

    assert removed >= 2
    assert await db["artifacts.files"].count_documents({"_id": unreferenced}) == 0
    assert await db["artifacts.chunks"].count_documents({"files_id": {"$in": [unreferenced, headless]}}) == 0
    assert await db["artifacts.chunks"].count_documents({"files_id": in_progress}) == 1
    assert (await admin.download_artifact(model_name, 1))[1] == kept
    await db["artifacts.chunks"].delete_many({"files_id": in_progress})


async def test_a_database_that_is_away_is_reported_as_unavailable(infra: Infra, model_name: str) -> None:
    mongo_port = free_port()
    mongodb = start_mongo(mongo_port, log_path=infra.logs / f"mongodb-{model_name}.log")
    app = RegistryApp(
        settings_for(
            infra, "dbaway", mongodb_uri=f"mongodb://127.0.0.1:{mongo_port}", transaction_timeout_seconds=2
        )
    )
    await app.start()
    try:
        token = infra.token(Scope.ADMIN)
        async with RegistryClient(f"127.0.0.1:{app.grpc_port}", lambda: token) as client:
            await client.create_model(model_name)
            mongodb.kill()
            with pytest.raises(Unavailable):
                await client.create_model(model_name + "-2")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30) as http:
            response = await http.get(
                f"/v1/models/{model_name}", headers={"Authorization": f"Bearer {token}"}
            )
        assert response.status_code == 503 and "retry" in response.json()["detail"]
    finally:
        await app.stop()
        mongodb.stop()


HOLDER = """
import asyncio, sys
from pymongo import AsyncMongoClient
from services.registry.store.database import Store


async def hold() -> None:
    client = AsyncMongoClient(sys.argv[2])
    store = Store(client, client[sys.argv[3]], artifact_chunk_bytes=65536, signing_key=None)

    async def work(tx) -> None:
        await tx.models._collection.update_one(
            {"_id": sys.argv[1]}, {"$set": {"description": "held"}}, session=tx.models.session
        )
        print("holding", flush=True)
        await asyncio.Event().wait()

    await store.transaction(work)


asyncio.run(hold())
"""
"""A registry process caught inside a transaction that changes the model ``argv[1]``
(database ``argv[3]`` at ``argv[2]``)."""


async def test_a_transaction_left_open_by_a_killed_registry_is_ended_when_the_registry_restarts(
    infra: Infra, model_name: str
) -> None:
    # Short transactions, so a change the open transaction blocks fails in 2 s, not 10.
    settings = settings_for(infra, "orphan" + uuid.uuid4().hex[:8], transaction_timeout_seconds=2.0)
    token = infra.token(Scope.ADMIN)
    async with started(RegistryApp(settings)) as app:
        async with RegistryClient(f"127.0.0.1:{app.grpc_port}", lambda: token) as client:
            await client.create_model(model_name)
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        model_name,
        settings.mongodb_uri.get_secret_value(),
        settings.mongodb_database,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"holding\n"

        # A registry starting while the holder runs leaves its transaction alone: it is a
        # live process's, on this host.
        async with started(RegistryApp(settings)) as app:
            async with RegistryClient(f"127.0.0.1:{app.grpc_port}", lambda: token) as client:
                with pytest.raises(Unavailable):
                    await client.update_model(model_name, description="blocked")
        holder.kill()
        await holder.wait()

        # Killed, its transaction would hold the model for the database's transaction
        # lifetime (60 s); the restarted registry ends it, and the change goes through.
        async with started(RegistryApp(settings)) as app:
            async with RegistryClient(f"127.0.0.1:{app.grpc_port}", lambda: token) as client:
                changed = await client.update_model(model_name, description="after the kill")
        assert changed.description == "after the kill"
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
