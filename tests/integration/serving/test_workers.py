"""A serving replica of two worker processes on shared ports (``SERVING_WORKERS=2``): ready
only when both are, answering while one is down, restarting the one that died, and reporting
the replica's metrics whichever worker a scrape reaches."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import numpy as np
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.common.localstack import free_port
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from tests.helpers.waiting import wait_for
from tests.integration.serving.conftest import Fitted, Stack, features_request, output
from tests.integration.serving.test_process import serving_env

START = 180.0
"""Seconds a worker may take to start and load its models on a busy two-core machine (seen:
60 s from spawn to its first log line, importing, at a load average of 21)."""
REQUESTS = "mlops_serving_requests_total"
PREDICTIONS = 16
"""One per connection: the kernel hands all of them to one worker with probability 2 * 2**-16."""
SCRAPES = 6
"""Each on a new connection, so each reaches either worker."""


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


async def scrape(http_port: int) -> list[Sample]:
    """Every sample of ``/metrics``, asked on a new connection."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{http_port}/metrics")
    response.raise_for_status()
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def predictions(samples: list[Sample], model: str) -> float:
    return sum(s.value for s in samples if s.name == REQUESTS and s.labels.get("model") == model)


def metrics_directory(worker: int) -> Path:
    """The directory a worker writes its metrics to, as its environment says."""
    for variable in Path(f"/proc/{worker}/environ").read_bytes().split(b"\0"):
        name, _, value = variable.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(os.fsdecode(value))
    raise AssertionError(f"worker {worker} has no PROMETHEUS_MULTIPROC_DIR")


def counted_by_each_worker(workers: list[int], model: str) -> dict[int, float]:
    """Each worker's own count of ``model``'s requests, from the file it writes its counters to."""
    counts = {}
    for pid in workers:
        own = metrics_directory(pid) / f"counter_{pid}.db"
        samples = [s for family in MultiProcessCollector.merge([str(own)]) for s in family.samples]
        counts[pid] = predictions(samples, model)
    return counts


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
            raise AssertionError(
                f"{exc}; problems: {self._last}; log: {self.log.read_text()[-1500:]}"
            ) from None

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
        directory = metrics_directory(before[0])
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
        # The dead worker's requests still count; its gauges (live ones) were dropped.
        assert predictions(await scrape(http_port), model_name) == 16
        assert (directory / f"counter_{before[0]}.db").exists()
        assert not glob.glob(str(directory / f"gauge_live*_{before[0]}.db"))
        await replica.stop()
    assert not directory.exists()
    text = replica.log.read_text()
    assert "serving_worker_exited" in text and text.count("serving_stopped") >= 2, text[-2000:]


async def test_every_scrape_of_a_two_worker_replica_reports_the_replica_totals(
    stack: Stack, model_name: str, model_a: Fitted, tmp_path: Path
) -> None:
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    async with two_workers(stack, tmp_path / "serving.log") as replica:
        await answers(stack, replica.grpc_port, model_name, model_a, connections=PREDICTIONS)

        scrapes = [await scrape(replica.http_port) for _ in range(SCRAPES)]
        assert [predictions(s, model_name) for s in scrapes] == [PREDICTIONS] * SCRAPES
        for samples in scrapes:
            # Every gauge a worker sets is merged into one series for the replica, none per
            # worker (labelled by pid): the models ready (this model and those of earlier tests
            # on the same registry) once.
            assert not [s for s in samples if "pid" in s.labels], samples
            ready = [
                s for s in samples if s.name == "mlops_serving_models" and s.labels == {"state": "READY"}
            ]
            assert len(ready) == 1 and ready[0].value >= 1, ready

        # Both workers served some of them: the sum above is not one worker's count.
        counts = counted_by_each_worker(workers_of(replica.process.pid), model_name)
        assert len(counts) == 2 and all(counts.values()) and sum(counts.values()) == PREDICTIONS, counts
        await replica.stop()
