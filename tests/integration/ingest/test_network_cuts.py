"""Ingest cut off from its database or its broker by the network (a proxy the test
controls), mid-stream: its API stays up and says what is away, the batch in hand waits, and
once the link is back every event is stored once, without a restart."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.events import Topics
from services.common.kafka import create_producer
from services.common.localstack import free_port, start_kafka
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from tests.conftest import Infra
from tests.helpers.apps import app_settings, started
from tests.helpers.datasets import orders_schema
from tests.helpers.proxy import TcpProxy, kafka_client_id
from tests.helpers.waiting import eventually
from tests.integration.ingest.conftest import PSEUDONYMIZATION_KEY

pytestmark = pytest.mark.faults  # slow: `make test-faults` runs it, and CI

EVENTS = 600
WAIT = 120.0


def order(dataset: str, i: int, base: datetime) -> bytes:
    event = {
        "dataset": dataset,
        "event_id": f"cut-{i}",
        "customer": f"c{i % 20}",
        "ts": (base + timedelta(milliseconds=i)).isoformat(),
        "amount": float(i % 900),
        "items": 1 + i % 4,
        "country": "FR",
        "label": "yes" if i % 2 else "no",
    }
    return json.dumps(event).encode()


async def test_ingest_cut_from_its_database_mid_stream_stores_every_event_once_after(infra: Infra) -> None:
    prefix = "cut" + uuid.uuid4().hex[:8]
    dataset, topics = f"orders-{prefix}", Topics(prefix)
    mongo_port = int(infra.mongodb_uri.rsplit(":", 1)[1].split("/")[0])
    rows_client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongodb_uri)
    rows = rows_client[prefix]["ingest_rows"]
    base = datetime.now(UTC) - timedelta(hours=1)

    async def stored() -> int:
        return await rows.count_documents({"dataset": dataset})

    with TcpProxy(mongo_port) as link:
        settings = app_settings(
            IngestSettings,
            infra,
            prefix,
            # Direct: the database names itself as a replica set member, which a client would
            # then reach around the proxy.
            mongodb_uri=f"mongodb://{link.address}/?directConnection=true",
            pseudonymization_key=PSEUDONYMIZATION_KEY,
        )
        producer = create_producer(infra.kafka_bootstrap, "cut-test")
        await producer.start()
        try:
            async with (
                started(IngestApp(settings)) as app,
                DatasetClient(f"127.0.0.1:{app.grpc_port}", lambda: infra.token(Scope.WRITE)) as datasets,
            ):
                await datasets.register_schema(orders_schema(dataset))
                for i in range(EVENTS // 2):
                    await producer.send(topics.raw_events, order(dataset, i, base), key=f"cut-{i}".encode())
                await producer.flush()
                await eventually(stored, lambda count: count == EVENTS // 2, within=WAIT)

                link.cut()
                for i in range(EVENTS // 2, EVENTS):
                    await producer.send(topics.raw_events, order(dataset, i, base), key=f"cut-{i}".encode())
                await producer.flush()
                # The consumer holds its batch and retries it, rather than commit past it; the
                # HTTP API answers, and says the database is away (503, retry later).
                group = f"{prefix}.{settings.consumer_group}"
                await eventually(lambda: _retries(group), lambda count: count > 0, within=WAIT)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{app.http_port}", timeout=30
                ) as http:
                    await _refused_for_now(http, infra, order(dataset, EVENTS, base))
                assert await stored() == EVENTS // 2

                link.mend()
                await eventually(stored, lambda count: count >= EVENTS, within=WAIT)
        finally:
            await producer.stop()
    assert await stored() == EVENTS
    assert len(await rows.distinct("event_id", {"dataset": dataset})) == EVENTS
    await rows_client.close()


async def _retries(group: str) -> float:
    return REGISTRY.get_sample_value("mlops_kafka_handler_retries_total", {"group": group}) or 0.0


async def test_ingest_cut_from_its_broker_mid_stream_stores_every_event_once_after(
    infra: Infra, tmp_path: Path
) -> None:
    prefix = "kcut" + uuid.uuid4().hex[:8]
    dataset, topics = f"orders-{prefix}", Topics(prefix)
    rows_client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(infra.mongodb_uri)
    rows = rows_client[prefix]["ingest_rows"]
    base = datetime.now(UTC) - timedelta(hours=1)
    producer_id = "kcut-test-producer"

    async def stored() -> int:
        return await rows.count_documents({"dataset": dataset})

    async def send(numbers: range) -> None:
        for i in numbers:
            await producer.send(topics.raw_events, order(dataset, i, base), key=f"cut-{i}".encode())
        await producer.flush()

    kafka_port = free_port()
    # A broker of its own, advertising the proxy: Kafka clients connect to the address in the
    # broker's metadata, whatever address they bootstrapped from.
    with TcpProxy(kafka_port) as link:
        kafka = start_kafka(kafka_port, log_path=tmp_path / "kafka.log", advertised_port=link.port)
        settings = app_settings(
            IngestSettings,
            infra,
            prefix,
            kafka_bootstrap_servers=link.address,
            pseudonymization_key=PSEUDONYMIZATION_KEY,
        )
        producer = create_producer(link.address, producer_id)
        try:
            await producer.start()
            async with (
                started(IngestApp(settings)) as app,
                DatasetClient(f"127.0.0.1:{app.grpc_port}", lambda: infra.token(Scope.WRITE)) as datasets,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60) as http,
            ):
                await datasets.register_schema(orders_schema(dataset))
                await send(range(EVENTS // 2))
                await eventually(stored, lambda count: count == EVENTS // 2, within=WAIT)

                # Ingest's link to the broker goes; the producers' (the test's) stays.
                link.cut(sparing=lambda hello: kafka_client_id(hello) == producer_id)
                cut = time.monotonic()
                await send(range(EVENTS // 2, EVENTS))
                # Its API answers: alive, and an HTTP batch is refused with "retry later" once
                # publishing its features times out, which takes the cut past the consumer's
                # session (10 s): the broker drops ingest from its group.
                assert (await http.get("/health/live")).status_code == 200
                await _refused_for_now(http, infra, order(dataset, EVENTS, base))
                # Readiness still says ready: a consumer the broker does not answer counts as
                # stuck only after the stall (60 s) past the moment its lag goes unknown (10 s);
                # tests/integration/common/test_broker_cuts.py shows the report.
                ready = await http.get("/health/ready")
                assert ready.status_code == 200, ready.text
                assert await stored() <= EVENTS // 2 + 1  # the HTTP event's row may be stored

                link.mend()
                mended = time.monotonic()
                await eventually(stored, lambda count: count >= EVENTS + 1, within=WAIT)
                print(
                    f"ingest cut from its broker for {mended - cut:.1f}s: every event stored "
                    f"{time.monotonic() - mended:.1f}s after the link was mended"
                )
                assert (await http.get("/health/ready")).status_code == 200
        finally:
            await producer.stop()
            kafka.stop()
    assert await stored() == EVENTS + 1
    assert len(await rows.distinct("event_id", {"dataset": dataset})) == EVENTS + 1
    await rows_client.close()


async def _refused_for_now(http: httpx.AsyncClient, infra: Infra, event: bytes) -> None:
    """An HTTP batch of ``event`` is refused with "retry later" (503, Retry-After) while the
    service stays alive."""
    answer = await http.post(
        "/v1/events",
        json=[json.loads(event)],
        headers={"authorization": f"Bearer {infra.token(Scope.INGEST)}"},
    )
    assert answer.status_code == 503 and "retry-after" in answer.headers, answer.text
    assert (await http.get("/health/live")).status_code == 200
