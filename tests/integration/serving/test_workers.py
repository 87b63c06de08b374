"""A serving replica of two worker processes on shared ports (``SERVING_WORKERS=2``): ready
only when both are, answering while one is down, and restarting the one that died."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import numpy as np

from services.common.localstack import free_port
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from tests.helpers.waiting import wait_for
from tests.integration.serving.conftest import Fitted, Stack, features_request, output
from tests.integration.serving.test_process import serving_env

START = 180.0
"""Seconds a worker may take to start and load its models on a busy two-core machine (seen:
60 s from spawn to its first log line, importing, at a load average of 21)."""


def workers_of(pid: int) -> list[int]:
    """The worker processes a replica spawned (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue  # exited since
        if b"spawn_main" in command:
            out.append(int(child))
    return sorted(out)


async def readiness(http_port: int) -> tuple[int, list[str]]:
    """(status, problems) of ``/health/ready``, asked on a new connection."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{http_port}/health/ready")
    return response.status_code, response.json().get("problems", [])


async def answers(stack: Stack, grpc_port: int, model: str, fitted: Fitted, connections: int) -> None:
    """``connections`` new channels (so new connections the kernel may hand to any worker)
    each get the model's probabilities."""
    for _ in range(connections):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            response = await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                features_request(model, fitted.X[:3]), metadata=stack.metadata(), timeout=10
            )
        np.testing.assert_allclose(output(response, "probabilities"), fitted.proba(fitted.X[:3]))


class Replica:
    """A serving replica of two workers started as the ``services.serving`` process."""

    def __init__(self, process: asyncio.subprocess.Process, grpc_port: int, http_port: int, log: Path):
        self.process = process
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.log = log
        self._last: list[str] = ["no answer"]

    async def _ready(self) -> bool:
        try:
            status, self._last[:] = await readiness(self.http_port)
        except httpx.HTTPError as exc:
            self._last[:] = [repr(exc)]
            return False
        return status == 200

    async def ready(self, what: str) -> None:
        try:
            await wait_for(self._ready, START, what, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; problems: {self._last}; log: {self.log.read_text()[-1500:]}") from None

    async def stop(self) -> None:
        """SIGTERM, then the exit code must be 0."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await self.process.wait()
        assert self.process.returncode == 0, self.log.read_text()[-2000:]


@contextlib.asynccontextmanager
async def two_workers(stack: Stack, log: Path) -> AsyncIterator[Replica]:
    """A two-worker replica, ready; killed on the way out if a test left it running."""
    grpc_port, http_port = free_port(), free_port()
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.serving",
            env={**serving_env(stack, grpc_port, http_port), "SERVING_WORKERS": "2"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        replica = Replica(process, grpc_port, http_port, log)
        await replica.ready("both workers ready")
        yield replica
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_two_workers_answer_on_shared_ports_and_one_that_dies_is_restarted(
    stack: Stack, model_name: str, model_a: Fitted, tmp_path: Path
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    async with two_workers(stack, tmp_path / "serving.log") as replica:
        grpc_port, http_port = replica.grpc_port, replica.http_port
        before = workers_of(replica.process.pid)
        assert len(before) == 2, before
        await answers(stack, grpc_port, model_name, model_a, connections=6)

        os.kill(before[0], signal.SIGKILL)
        seen: list[str] = []

        async def replica_not_ready() -> bool:
            try:
                status, problems = await readiness(http_port)
            except httpx.HTTPError:
                return False  # a connection the dead worker had accepted, reset with it
            seen[:] = problems
            return status == 503

        # The survivor answers readiness for the replica: not ready while a worker is down.
        await wait_for(replica_not_ready, 10, "the replica to report the dead worker", interval=0.1)
        assert seen and all(p.startswith("worker ") for p in seen), seen
        # And it keeps answering predictions meanwhile, on whatever connection.
        await answers(stack, grpc_port, model_name, model_a, connections=4)

        await replica.ready("the replica ready again")
        after = workers_of(replica.process.pid)
        assert len(after) == 2 and before[0] not in after and before[1] in after, (before, after)
        await answers(stack, grpc_port, model_name, model_a, connections=6)
        await replica.stop()
    text = replica.log.read_text()
    assert "serving_worker_exited" in text and text.count("serving_stopped") >= 2, text[-2000:]
