"""Inference over Kafka against gRPC, same model, same serving process, same run.

``python -m bench.kafka_inference [--seconds 10] [--flood 20000]``

The HistGradientBoostingClassifier of :mod:`bench.serving` is registered in a real registry
and served by a real serving process (broker, database, registry and serving each their own
process, prediction logging on). Single-row requests, the same serialized
``ModelInferRequest`` bytes either way:

- gRPC: 32 clients back to back (:func:`bench.serving.load`);
- Kafka, closed loop: 32 clients each producing a request to ``mlops.inference.requests``
  and waiting for its answer on ``mlops.inference.responses`` (end-to-end latency, broker
  hops included);
- Kafka, flood: ``--flood`` requests produced at once, timed until the last answer: the
  throughput a backlog drains at.

It prints requests/s and p50/p99 for each, and the ratios of Kafka to gRPC. Kafka trades
latency (two broker hops, each fetch held up to ``SERVING_KAFKA_INFERENCE_FETCH_WAIT_MS``)
for decoupling and durability; the ratio says how much.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from bench.serving import MODEL, Result, load, register, request_bytes, train
from services.cli.stack import LocalStack
from services.cli.stack_state import StackPorts
from services.common.auth import Scope
from services.common.events import Topics
from services.common.flavors.skops import SkopsFlavor
from services.common.kafka import TailReader, create_producer

CONCURRENCY = 32
TOPICS = Topics()


def headers(event_id: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"urn:bench"),
        ("ce_type", b"mlops.inference.request"),
        ("ce_subject", MODEL.encode()),
        ("content-type", b"application/protobuf"),
    ]


class KafkaClient:
    """Produces requests and resolves each one's future when its answer arrives."""

    def __init__(self, bootstrap: str):
        self._producer = create_producer(bootstrap, "bench", linger_ms=1)
        self._responses = TailReader(
            bootstrap, [TOPICS.inference_responses], client_id="bench", fetch_max_wait_ms=5
        )
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaClient:
        await self._producer.start()
        await self._responses.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._responses.stop()
        await self._producer.stop()

    async def _read(self) -> None:
        while True:
            for record in await self._responses.read(timeout_ms=100):
                answered = dict(record.headers).get("ce_inresponseto", b"").decode()
                future = self._waiting.pop(answered, None)
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())

    async def send(self, payload: bytes) -> asyncio.Future[float]:
        """Produce one request; the future resolves to the time its answer was read."""
        event_id = uuid.uuid4().hex
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        await self._producer.send(
            TOPICS.inference_requests, payload, key=event_id.encode(), headers=headers(event_id)
        )
        return future


async def closed_loop(client: KafkaClient, payloads: list[bytes], seconds: float) -> Result:
    latencies: list[float] = []

    async def worker(index: int, deadline: float, record: bool) -> None:
        i = index
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            answered = await asyncio.wait_for(await client.send(payloads[i % len(payloads)]), 30)
            if record:
                latencies.append(answered - started)
            i += CONCURRENCY

    await asyncio.gather(
        *(worker(w, time.perf_counter() + min(2.0, seconds / 5), False) for w in range(CONCURRENCY))
    )
    started = time.perf_counter()
    await asyncio.gather(*(worker(w, started + seconds, True) for w in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    return Result("kafka", 1, CONCURRENCY, len(latencies), 0, elapsed, float(p50), float(p99), 0.0)


async def flood(client: KafkaClient, payloads: list[bytes], count: int) -> float:
    """Requests/s from the first request produced to the last answer read."""
    started = time.perf_counter()
    futures = [await client.send(payloads[i % len(payloads)]) for i in range(count)]
    answered = await asyncio.wait_for(asyncio.gather(*futures), 300)
    return count / (max(answered) - started)


async def kafka_runs(
    bootstrap: str, payloads: list[bytes], seconds: float, count: int
) -> tuple[Result, float]:
    async with KafkaClient(bootstrap) as client:
        # The first answer also waits for serving's consumer to join its group.
        await asyncio.wait_for(await client.send(payloads[0]), 60)
        return await closed_loop(client, payloads, seconds), await flood(client, payloads, count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each closed-loop run")
    parser.add_argument("--flood", type=int, default=20000, help="requests produced at once in the flood run")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    model, X = train()
    artifact = SkopsFlavor().save(model).data
    payloads = request_bytes(X, 1)
    env = {"OMP_NUM_THREADS": "1", "MLOPS_LOG_LEVEL": "WARNING"}
    with (
        tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp,
        LocalStack(Path(tmp), StackPorts.free(), services=["registry", "serving"], env=env) as stack,
    ):
        asyncio.run(register(stack, artifact))
        token = stack.keys.mint("bench", Scope.PREDICT)
        pid = stack.processes["serving"].pid
        grpc = asyncio.run(
            load("serving", stack.grpc_address("serving"), token, X, 1, CONCURRENCY, args.seconds, [pid])
        )
        kafka, flood_rate = asyncio.run(kafka_runs(stack.kafka_bootstrap, payloads, args.seconds, args.flood))
    for name, result in (("gRPC", grpc), ("Kafka", kafka)):
        print(
            f"  {name:<5} 1 row, {CONCURRENCY} clients: {result.requests_per_s:7.0f} req/s  "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
        )
    print(f"  Kafka flood of {args.flood}: {flood_rate:7.0f} req/s until the last answer")
    print(
        f"\nKafka / gRPC, {CONCURRENCY} clients: throughput {kafka.requests_per_s / grpc.requests_per_s:.2f}x, "
        f"p50 {kafka.p50_ms / grpc.p50_ms:.1f}x, p99 {kafka.p99_ms / grpc.p99_ms:.1f}x; "
        f"flood throughput {flood_rate / grpc.requests_per_s:.2f}x gRPC's"
    )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0 if grpc.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
