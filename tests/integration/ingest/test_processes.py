"""Ingest as it runs in production: separate processes in one consumer group, fed by a
producer written by someone else (confluent-kafka, librdkafka). Every event is
accounted for, each stored exactly once, and a planted private value appears nowhere
downstream: no topic but the one it was sent to, no collection, no log line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from bson import json_util
from confluent_kafka import Producer
from pymongo import AsyncMongoClient

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.events import Topics
from services.common.localstack import ManagedProcess, free_port, start_process
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from tests.conftest import Infra
from tests.helpers.datasets import orders_schema
from tests.helpers.kafka import read_to_end
from tests.helpers.waiting import eventually
from tests.integration.ingest.conftest import PSEUDONYMIZATION_KEY

REPO = Path(__file__).resolve().parents[3]
PLANTED = "planted-" + uuid.uuid4().hex
EVENTS_METRIC = re.compile(
    r'^mlops_ingest_events_total\{dataset="([^"]+)",outcome="(\w+)"\} ([0-9.e+]+)$', re.M
)


class IngestProcess:
    def __init__(self, infra: Infra, prefix: str, logs: Path, index: int):
        self.http_port, self.grpc_port = free_port(), free_port()
        env = {
            **os.environ,
            **infra.env(prefix, prefix),
            "INGEST_HTTP_PORT": str(self.http_port),
            "INGEST_GRPC_PORT": str(self.grpc_port),
            "INGEST_PSEUDONYMIZATION_KEY": PSEUDONYMIZATION_KEY,
            "INGEST_CONSUMER_BATCH_SIZE": "50",
            "INGEST_STORE_BATCH_SIZE": "16",
            "MLOPS_LOG_LEVEL": "DEBUG",
        }
        self.log = logs / f"ingest-{index}.log"
        self.process: ManagedProcess = start_process(
            f"ingest-{index}", [sys.executable, "-m", "services.ingest"], env=env, log_path=self.log, cwd=REPO
        )

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        async with asyncio.timeout(30):
            while True:
                assert self.process.alive(), self.process.log_tail()
                try:
                    if (
                        await client.get(f"http://127.0.0.1:{self.http_port}/health/ready")
                    ).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    async def events_handled(self, client: httpx.AsyncClient, dataset: str) -> float:
        text = (await client.get(f"http://127.0.0.1:{self.http_port}/metrics")).text
        return sum(float(n) for d, _, n in EVENTS_METRIC.findall(text) if d == dataset)


@pytest.fixture
def prefix() -> str:
    return "tp" + uuid.uuid4().hex[:8]


@pytest.fixture
async def processes(infra: Infra, prefix: str, tmp_path: Path) -> AsyncIterator[list[IngestProcess]]:
    started = [IngestProcess(infra, prefix, tmp_path, index) for index in range(2)]
    try:
        yield started
    finally:
        for process in started:
            process.process.stop()


@pytest.fixture
def producer(infra: Infra) -> Iterator[Producer]:
    producer = Producer(
        {"bootstrap.servers": infra.kafka_bootstrap, "enable.idempotence": False, "acks": "all"}
    )
    yield producer
    producer.flush(10)


def send(producer: Producer, topic: str, events: list[dict[str, Any]]) -> None:
    """Produce with librdkafka and wait for every delivery report."""
    failures: list[str] = []

    def report(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for event in events:
        producer.produce(
            topic, json.dumps(event).encode(), key=str(event.get("event_id", "")), on_delivery=report
        )
    assert producer.flush(30) == 0
    assert not failures, failures


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic`` (key, headers and value), as bytes to search."""
    return [
        (r.key or b"") + b"".join(k.encode() + (v or b"") for k, v in r.headers) + (r.value or b"")
        for r in await read_to_end(bootstrap, topic)
    ]


async def settled(api: DatasetClient, dataset: str, events: int) -> Any:
    """The quality summary once it accounts for at least ``events`` events."""
    return await eventually(
        lambda: api.quality_summary(dataset),
        lambda s: s.accepted + s.duplicates + s.rejected >= events,
        within=60,
        interval=0.2,
    )


async def test_two_processes_share_the_work_and_account_for_every_event(
    infra: Infra, prefix: str, processes: list[IngestProcess], producer: Producer
) -> None:
    topics = Topics(prefix)
    dataset = f"orders-{prefix}"
    token = infra.token(Scope.READ, Scope.WRITE)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def order(i: int, **changes: Any) -> dict[str, Any]:
        event = {
            "dataset": dataset,
            "event_id": f"o{i}",
            "customer": f"customer-{i % 7}",
            "ts": (base + timedelta(seconds=i)).isoformat(),
            "amount": float(i % 500),
            "label": "yes" if i % 3 else "no",
        }
        event.update(changes)
        return event

    async with httpx.AsyncClient(timeout=10) as http:
        for process in processes:
            await process.wait_ready(http)
        async with DatasetClient(f"127.0.0.1:{processes[0].grpc_port}", lambda: token) as api:
            await api.register_schema(orders_schema(dataset))

            # Keep sending until both members of the group have taken a share: the group
            # settles a few seconds after the second member joins. Events handled twice
            # while it settles (a batch whose commit raced the rebalance) are why this
            # phase is not part of the exact accounting below.
            sent = 0
            async with asyncio.timeout(60):
                while True:
                    await asyncio.to_thread(
                        send, producer, topics.raw_events, [order(sent + i) for i in range(40)]
                    )
                    sent += 40
                    handled = [0.0]
                    while sum(handled) < sent:
                        await asyncio.sleep(0.2)
                        handled = [await p.events_handled(http, dataset) for p in processes]
                    if all(handled):
                        break
            before = await settled(api, dataset, sent)
            shares_before = [await p.events_handled(http, dataset) for p in processes]

            valid = [order(i) for i in range(sent, sent + 400)]
            valid[7]["customer"] = PLANTED
            invalid = [
                order(10_000, amount="lots"),
                order(10_001, amount=-5, customer=PLANTED),
                order(10_002, ts="soon"),
                order(10_003, country="FR"),
                {**order(10_004), "amount": None},
            ]
            duplicates = [valid[i] for i in range(0, 400, 20)] + [order(3, amount=42.0)]
            await asyncio.to_thread(send, producer, topics.raw_events, valid + invalid + duplicates)
            total = len(valid) + len(invalid) + len(duplicates)

            after = await settled(api, dataset, sent + total)
            assert (
                after.accepted - before.accepted,
                after.duplicates - before.duplicates,
                after.rejected - before.rejected,
            ) == (len(valid), len(duplicates), len(invalid))
            shares = [
                await p.events_handled(http, dataset) - b
                for p, b in zip(processes, shares_before, strict=True)
            ]
            assert all(share > 0 for share in shares) and sum(shares) == total, shares

            # Stored exactly once: every valid event, no other, none twice.
            window = await api.read_window(DataWindow(dataset=dataset), labelled_only=False)
            ids = [row.event_id for row in window.rows]
            assert len(ids) == len(set(ids))
            assert set(ids) == {f"o{i}" for i in range(sent + len(valid))}

    # SIGTERM: each process finishes its batch, commits, leaves the group and exits 0.
    for process in processes:
        process.process.signal(signal.SIGTERM)
    for process in processes:
        assert await asyncio.to_thread(process.process.popen.wait, 30) == 0, process.process.log_tail()

    # The planted value went to the raw topic only: nowhere downstream.
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        ours = sorted(t for t in await admin.list_topics() if t.startswith(f"{prefix}."))
    finally:
        await admin.close()
    assert set(ours) >= {topics.raw_events, topics.features, topics.labels, Topics.dlq(topics.raw_events)}
    raw = await read_topic(infra.kafka_bootstrap, topics.raw_events)
    assert sum(PLANTED.encode() in record for record in raw) == 2  # the test itself can see it
    downstream = {topics.features, topics.labels, Topics.dlq(topics.raw_events)}
    for topic in ours:
        if topic == topics.raw_events:
            continue
        records = await read_topic(infra.kafka_bootstrap, topic)
        assert records or topic not in downstream, f"{topic} is empty: the search would prove nothing"
        assert not [r for r in records if PLANTED.encode() in r], topic
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_uri)
    try:
        database = client[prefix]
        collections = await database.list_collection_names()
        assert "ingest_rows" in collections
        for name in collections:
            dump = json_util.dumps([doc async for doc in database[name].find()])
            assert PLANTED not in dump, name
    finally:
        await client.close()
    for process in processes:
        log = process.log.read_text()
        assert "ingest_started" in log and "dead_letter" in log
        assert PLANTED not in log
