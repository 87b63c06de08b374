"""A monitor process as the monitor bench sees it: what its status counts, its CPU and memory,
and the drift events it published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.processes import cpu_seconds, rss_bytes
from services.common.events import IncomingRecord, decode
from services.common.localstack import ManagedProcess
from services.common.proto.mlops.v1 import events_pb2

WAIT = 300.0


@dataclass
class Monitor:
    process: ManagedProcess
    url: str
    token: str

    async def _status(self) -> dict[str, object]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"{self.url}/v1/status", headers={"authorization": f"Bearer {self.token}"}
            )
        return response.json() if response.status_code == 200 else {}

    async def assignment(self) -> dict[str, list[int]]:
        """Partitions this process owns, by topic."""
        return (await self._status()).get("assignment", {})  # type: ignore[return-value]

    async def status(self) -> dict[str, dict[str, int]]:
        """Per model: predictions and labelled samples of version 1."""
        out = {}
        for model in (await self._status()).get("models", []):  # type: ignore[attr-defined]
            for v in model["versions"]:
                if v["version"] == 1:
                    out[model["model"]] = {"predictions": v["predictions"], "labelled": v["labelled"]}
        return out

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        return rss_bytes(self.process.pid) / 2**20


async def wait_until(check: object, what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no {what} within {within:.0f}s")


async def count_reached(monitor: Monitor, model: str, field: str, count: int) -> bool:
    return (await monitor.status()).get(model, {}).get(field, 0) >= count


async def counted(monitors: Sequence[Monitor], field: str) -> list[int]:
    """Per process: ``field`` summed over the models it holds."""
    return [sum(m.get(field, 0) for m in (await monitor.status()).values()) for monitor in monitors]


async def read_drift(bootstrap: str, topic: str) -> list[events_pb2.DriftEvent]:
    """Every drift event so far. The end is the fetch high watermark: the embedded broker's
    ListOffsets answers the last batch's base offset + 1, short after a multi-record batch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out = []
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    incoming = IncomingRecord(
                        r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp
                    )
                    out.append(decode(incoming, events_pb2.DriftEvent).message)
            ends = {tp: consumer.highwater(tp) for tp in partitions}
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(end is not None and positions[tp] >= end for tp, end in ends.items()):
                return out
    finally:
        await consumer.stop()
