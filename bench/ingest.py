"""Ingest throughput against the two floors it is built on, and its memory over a soak.

``python -m bench.ingest [--events 20000] [--rounds 10] [--soak-seconds 120]``

Events of 20 numeric fields plus an id, a private customer id (pseudonymized), a
timestamp and a label (two derived features: hour of day and a ratio) go through the
whole ingest path in its own process: consume, validate, pseudonymize, derive,
bulk-store, publish features and labels, commit. Floors, measured in this run on the
same broker and database with the same events:

- raw aiokafka consumption of the same messages (no group, no work);
- bulk ``insert_many`` of the same rows, as ingest stores them, into ingest's own
  collection and indexes, 1,000 rows per call (ingest consumes batches of 1,000 and
  writes each as several smaller inserts, so the floor gets the larger calls).

The events are split into rounds that alternate ingest and the insert floor, so the
load of this shared machine hits both alike; the verdict is the median of the rounds'
ratios. Target (issue 5): ingest throughput at least 60% of the slower floor. Then the same
process ingests a steady stream for ``--soak-seconds`` while its resident memory is
sampled: the target is memory flat (under 10% growth after the first quarter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from bench.processes import cpu_seconds, rss_bytes
from services.common.auth import PlatformKeys, Scope
from services.common.clients.datasets import DatasetClient
from services.common.events import Topics
from services.common.kafka import create_producer, ensure_topics
from services.common.localstack import ManagedProcess, free_port, start_kafka, start_mongo, start_process
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldSpec, FieldType
from services.common.proto.mlops.v1.model_pb2 import DerivedFeature
from services.ingest.privacy import Pseudonymizer
from services.ingest.store import DatasetStore

DATASET = "bench-events"
N_FEATURES = 20
BATCH = 1000
TARGET_RATIO = 0.60
MAX_MEMORY_GROWTH = 0.10
KEY = "bench-pseudonymization-key-" + "x" * 16
EVENTS_TOTAL = re.compile(
    r'^mlops_ingest_events_total\{dataset="bench-events",outcome="\w+"\} ([0-9.e+]+)$', re.M
)


def schema() -> DatasetSchema:
    fields = [
        FieldSpec(name="event_id", type=FieldType.FIELD_TYPE_TEXT, required=True),
        FieldSpec(name="customer", type=FieldType.FIELD_TYPE_TEXT, required=True, private=True),
        FieldSpec(name="ts", type=FieldType.FIELD_TYPE_TIMESTAMP, required=True),
        FieldSpec(name="label", type=FieldType.FIELD_TYPE_CATEGORY, allowed_values=["0", "1"]),
    ]
    fields += [
        FieldSpec(name=f"f{i}", type=FieldType.FIELD_TYPE_NUMBER, required=True, has_min=True, min=-1e6)
        for i in range(N_FEATURES)
    ]
    return DatasetSchema(
        name=DATASET,
        event_id_field="event_id",
        entity_id_field="customer",
        timestamp_field="ts",
        label_field="label",
        fields=fields,
        derived=[
            DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"]),
            DerivedFeature(name="f0_per_f1", function="ratio", inputs=["f0", "f1"]),
        ],
    )


def event(i: int, base: datetime) -> dict[str, Any]:
    values = {f"f{j}": round(((i * 7919 + j * 104729) % 10007) / 97.0, 4) for j in range(N_FEATURES)}
    return {
        "dataset": DATASET,
        "event_id": f"e{i}",
        "customer": f"customer-{i % 5000}",
        "ts": (base + timedelta(milliseconds=i)).isoformat(),
        **values,
        "label": i % 2,
    }


def stored_row(
    item: dict[str, Any], dataset: str, pseudonymize: Pseudonymizer, now: datetime
) -> dict[str, Any]:
    """The document ingest stores for ``item``, built here for the insert floor."""
    moment = datetime.fromisoformat(item["ts"])
    features: dict[str, Any] = {f"f{j}": float(item[f"f{j}"]) for j in range(N_FEATURES)}
    features["hour"] = float(moment.hour)
    features["f0_per_f1"] = features["f0"] / features["f1"] if features["f1"] else None
    return {
        "dataset": dataset,
        "event_id": item["event_id"],
        "entity_id": pseudonymize(item["customer"]),
        "schema_version": 1,
        "event_time": moment,
        "ingested_at": now,
        "features": features,
        "label": str(item["label"]),
        "source": "bench",
    }


async def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = create_producer(bootstrap, "bench-producer", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, json.dumps(item).encode(), key=item["event_id"].encode())
            for item in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_floor(bootstrap: str, topic: str, count: int) -> float:
    """Messages per second of a bare consumer reading the topic from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            seen += sum(len(records) for records in batches.values())
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def insert_floor(mongodb_uri: str, database: str, rows: list[dict[str, Any]]) -> float:
    """Rows per second of ``insert_many`` in batches, into ingest's own collection and indexes."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        await DatasetStore(client[database]).ensure_indexes()
        collection = client[database]["ingest_rows"]
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            await collection.insert_many([dict(row) for row in rows[start : start + BATCH]], ordered=False)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await client.close()


async def handled(http: httpx.AsyncClient, port: int) -> int:
    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return int(sum(float(n) for n in EVENTS_TOTAL.findall(text)))


async def wait_handled(
    http: httpx.AsyncClient, port: int, count: int, process: ManagedProcess
) -> tuple[float, float]:
    """Poll until ``count`` events are handled; (time the first was seen, time the last was)."""
    first = None
    while True:
        if not process.alive():
            raise RuntimeError(f"ingest exited:\n{process.log_tail()}")
        done = await handled(http, port)
        now = time.perf_counter()
        if done and first is None:
            first = now
        if done >= count:
            return first or now, now
        await asyncio.sleep(0.05)


async def run(events: int, rounds: int, soak_seconds: float, workdir: Path) -> int:
    kafka_port, mongo_port = free_port(), free_port()
    kafka = start_kafka(kafka_port, log_path=workdir / "kafka.log")
    mongodb = start_mongo(mongo_port, ":memory:", log_path=workdir / "mongodb.log")
    bootstrap, mongodb_uri = f"127.0.0.1:{kafka_port}", f"mongodb://127.0.0.1:{mongo_port}"
    prefix = "bench" + uuid.uuid4().hex[:6]
    topics = Topics(prefix)
    keys = PlatformKeys()
    http_port, grpc_port = free_port(), free_port()
    ingest: ManagedProcess | None = None
    try:
        await ensure_topics(bootstrap, topics.all())
        base = datetime.now(UTC) - timedelta(days=1)
        stream = [event(i, base) for i in range(BATCH + events)]
        pseudonymize = Pseudonymizer(KEY.encode(), "1")
        env = {
            **os.environ,
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "MLOPS_MONGODB_URI": mongodb_uri,
            "MLOPS_MONGODB_DATABASE": prefix,
            "MLOPS_TOPIC_PREFIX": prefix,
            **keys.env(),
            "MLOPS_LOG_LEVEL": "WARNING",
            "INGEST_HTTP_PORT": str(http_port),
            "INGEST_GRPC_PORT": str(grpc_port),
            "INGEST_PSEUDONYMIZATION_KEY": KEY,
            "INGEST_CONSUMER_BATCH_SIZE": str(BATCH),
        }
        ingest = start_process(
            "ingest", [sys.executable, "-m", "services.ingest"], env=env, log_path=workdir / "ingest.log"
        )
        token = keys.mint("bench", Scope.WRITE, Scope.READ)
        async with httpx.AsyncClient(timeout=10) as http:
            # The schema goes in through ingest's own API before any event does.
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with DatasetClient(f"127.0.0.1:{grpc_port}", lambda: token) as api:
                        await api.register_schema(schema())
                    break
                except Exception:
                    if time.monotonic() > deadline or not ingest.alive():
                        raise
                    await asyncio.sleep(0.2)
            print(
                f"{events} events of {N_FEATURES} numbers + id, private customer, timestamp, label, "
                f"in {rounds} rounds of ingest then insert floor",
                flush=True,
            )
            # Warm-up, not measured: the consumer joins its group, both paths warm their caches.
            await produce(bootstrap, topics.raw_events, stream[:BATCH])
            await wait_handled(http, http_port, BATCH, ingest)
            now = datetime.now(UTC)
            await insert_floor(
                mongodb_uri, prefix, [stored_row(e, "warm-up", pseudonymize, now) for e in stream[:BATCH]]
            )

            # Rounds alternate the two paths on the same events, so a change in the machine's
            # load (it is shared) hits both alike; the verdict is the median paired ratio.
            size = events // rounds
            ingest_rates, insert_rates = [], []
            cpu = {"ingest": 0.0, "database (ingest)": 0.0, "database (floor)": 0.0}
            for round_index in range(rounds):
                chunk = stream[BATCH + round_index * size : BATCH + (round_index + 1) * size]
                ingest_cpu, database_cpu = cpu_seconds(ingest.pid), cpu_seconds(mongodb.pid)
                started = time.perf_counter()
                await produce(bootstrap, topics.raw_events, chunk)
                await wait_handled(http, http_port, BATCH + (round_index + 1) * size, ingest)
                ingest_rates.append(size / (time.perf_counter() - started))
                cpu["ingest"] += cpu_seconds(ingest.pid) - ingest_cpu
                cpu["database (ingest)"] += cpu_seconds(mongodb.pid) - database_cpu
                now = datetime.now(UTC)
                rows = [stored_row(e, "floor", pseudonymize, now) for e in chunk]
                database_cpu = cpu_seconds(mongodb.pid)
                insert_rates.append(await insert_floor(mongodb_uri, prefix, rows))
                cpu["database (floor)"] += cpu_seconds(mongodb.pid) - database_cpu
                print(
                    f"  round {round_index + 1:2}: ingest {ingest_rates[-1]:7,.0f} events/s, "
                    f"insert_many {insert_rates[-1]:7,.0f} rows/s",
                    flush=True,
                )
            consume_rate = await consume_floor(bootstrap, topics.raw_events, BATCH + rounds * size)
            ratios = [i / min(consume_rate, f) for i, f in zip(ingest_rates, insert_rates, strict=True)]
            ratio = statistics.median(ratios)
            ingest_rate = statistics.median(ingest_rates)
            print(f"  floor, raw aiokafka consumption : {consume_rate:10,.0f} events/s")
            print(
                f"  floor, insert_many of the rows  : {statistics.median(insert_rates):10,.0f} rows/s (median)"
            )
            print(f"  ingest, whole path              : {ingest_rate:10,.0f} events/s (median)")
            per_1000 = ", ".join(
                f"{name} {seconds * 1000 / (rounds * size):.2f} s" for name, seconds in cpu.items()
            )
            print(f"  CPU per 1,000 events            : {per_1000}")
            print(
                f"  ratio to the slower floor       : {ratio:10.2f}   (median of rounds "
                f"{', '.join(f'{r:.2f}' for r in ratios)}; target >= {TARGET_RATIO:.2f})",
                flush=True,
            )

            memory_ok = True
            if soak_seconds > 0:
                memory_ok = await soak(
                    bootstrap,
                    topics.raw_events,
                    http,
                    http_port,
                    ingest,
                    ingest_rate,
                    soak_seconds,
                    BATCH + rounds * size,
                )
        return 0 if ratio >= TARGET_RATIO and memory_ok else 1
    finally:
        if ingest is not None:
            ingest.stop()
        mongodb.stop()
        kafka.stop()


async def soak(
    bootstrap: str,
    topic: str,
    http: httpx.AsyncClient,
    port: int,
    ingest: ManagedProcess,
    ingest_rate: float,
    seconds: float,
    offset: int,
) -> bool:
    """Feed a steady stream at 70% of the measured rate; sample ingest's memory as it goes."""
    rate = max(100.0, 0.7 * ingest_rate)
    producer = create_producer(bootstrap, "bench-soak", linger_ms=5)
    await producer.start()
    samples: list[tuple[float, int]] = []
    base = datetime.now(UTC) - timedelta(hours=12)
    sent = 0
    started = time.perf_counter()
    next_sample = started
    try:
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                item = event(offset + sent, base)
                await producer.send(topic, json.dumps(item).encode(), key=item["event_id"].encode())
                sent += 1
            if time.perf_counter() >= next_sample:
                samples.append((elapsed, rss_bytes(ingest.pid)))
                next_sample += 5.0
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    await wait_handled(http, port, offset + sent, ingest)
    samples.append((time.perf_counter() - started, rss_bytes(ingest.pid)))
    warm = next(rss for at, rss in samples if at >= seconds / 4)
    peak, end = max(rss for _, rss in samples), samples[-1][1]
    growth = (end - warm) / warm
    mib = 1024 * 1024
    print(f"  soak: {sent:,} events over {seconds:.0f} s at {rate:,.0f}/s, all handled")
    print(
        f"  ingest RSS: {samples[0][1] / mib:.0f} MiB at start, {warm / mib:.0f} MiB after {seconds / 4:.0f} s, "
        f"{end / mib:.0f} MiB at the end (peak {peak / mib:.0f}); growth {growth:+.1%} "
        f"(target < {MAX_MEMORY_GROWTH:.0%})",
        flush=True,
    )
    return growth < MAX_MEMORY_GROWTH


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events in the throughput run")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds the events are split into")
    parser.add_argument(
        "--soak-seconds", type=float, default=120.0, help="length of the memory run; 0 skips it"
    )
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    if args.rounds < 1 or args.events // args.rounds < BATCH:
        parser.error(f"each round needs at least {BATCH} events (--events / --rounds)")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
        return asyncio.run(run(args.events, args.rounds, args.soak_seconds, Path(workdir)))


if __name__ == "__main__":
    sys.exit(main())
