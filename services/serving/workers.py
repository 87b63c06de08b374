"""Several worker processes per serving replica, sharing its gRPC and HTTP ports.

A serving process is bound by the GIL to about one core: grpc.aio admits calls, and the
platform checks, batches and logs them, all in one event loop. A replica therefore runs
``SERVING_WORKERS`` processes (by default one per core it may use). Each is a whole
:class:`~services.serving.app.ServingApp`: its own registry client, models, batchers,
model-event listener and prediction producer. All of them listen on the same ports with
``SO_REUSEPORT``, and the kernel spreads incoming *connections* over them (a gRPC channel is
one connection, so one client channel stays on one worker; many clients spread).

The prediction log stays one log in Kafka's terms: every worker produces to the same
topic with its own producer, keyed by request id as before, so each prediction still
shares its partition with its label.

Readiness answers for the replica, not for whichever worker a probe reached: each worker
posts its own problems on a :class:`WorkerBoard` (shared memory), and every worker's
``/health/ready`` and gRPC health add the others' (a worker still starting, one that
exited and is being restarted). The parent process serves nothing: it holds the ports,
supervises, and restarts a worker that exits unexpectedly.

``/metrics`` answers for the replica too: the workers write their metrics to files in a
private directory the parent makes (prometheus_client's multiprocess mode), whichever worker
a scrape reaches merges them all, and the parent drops a dead worker's gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import multiprocessing
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from services.common.http import reuse_port_socket
from services.common.logging import get_logger
from services.common.metrics import SHARED_DIRECTORY_VARIABLE
from services.serving.settings import ServingSettings

log = get_logger(__name__)

SLOT_BYTES = 2048
"""Room for one worker's problems (JSON, truncated to fit)."""
_HEADER = struct.Struct("<?I")  # posted, length of the JSON that follows
RESTART_BACKOFF_SECONDS = (1.0, 30.0)
"""First and longest wait before restarting a worker that exited (doubling in between)."""
STOP_GRACE_SECONDS = 30.0
"""How long a stopping replica waits for its workers to finish before killing them."""


class WorkerBoard:
    """Each worker's problems, readable by every worker of the replica.

    A slot nobody posted to yet reads as "starting". Reads and writes take the array's lock,
    so nobody sees a half-written slot.

    >>> board = WorkerBoard(2, multiprocessing.get_context("spawn"))
    >>> board.problems()
    ['worker 0: starting', 'worker 1: starting']
    >>> board.post(0, [])
    >>> board.post(1, ["not yet synced with the registry"])
    >>> board.problems(excluding=1)
    []
    >>> board.problems()
    ['worker 1: not yet synced with the registry']
    """

    def __init__(self, workers: int, context: Any):
        self.workers = workers
        self._slots: SynchronizedArray[ctypes.c_char] = context.Array(ctypes.c_char, workers * SLOT_BYTES)

    def post(self, index: int, problems: list[str]) -> None:
        """Worker ``index``'s problems now (empty: it is ready)."""
        body = json.dumps(problems).encode()
        limit = SLOT_BYTES - _HEADER.size
        if len(body) > limit:
            body = json.dumps([problems[0][: limit // 2]] if problems else []).encode()[:limit]
        start = index * SLOT_BYTES
        with self._slots.get_lock():
            raw = self._slots.get_obj()
            header = _HEADER.pack(True, len(body))
            ctypes.memmove(ctypes.addressof(raw) + start, header + body, len(header) + len(body))

    def problems(self, excluding: int | None = None) -> list[str]:
        """Every worker's problems but ``excluding``'s, each prefixed by its worker."""
        out = []
        with self._slots.get_lock():
            data = bytes(memoryview(self._slots.get_obj()).cast("B"))
        for index in range(self.workers):
            if index == excluding:
                continue
            start = index * SLOT_BYTES
            posted, length = _HEADER.unpack_from(data, start)
            if not posted:
                out.append(f"worker {index}: starting")
                continue
            body = data[start + _HEADER.size : start + _HEADER.size + length]
            try:
                problems = json.loads(body)
            except ValueError:
                problems = ["unreadable status"]
            out += [f"worker {index}: {problem}" for problem in problems]
        return out


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT, and its port.

    Port 0 becomes a concrete free port the workers then all bind; holding the socket keeps
    that port the replica's while workers come and go. It takes no connections: the kernel
    hands connections only to listening sockets of the group."""
    sock = reuse_port_socket(host, port)
    return sock, int(sock.getsockname()[1])


class WorkerPool:
    """Starts ``settings.workers`` worker processes on shared ports, restarts those that exit,
    and stops them all (SIGTERM, then SIGKILL after :data:`STOP_GRACE_SECONDS`)."""

    def __init__(self, settings: ServingSettings):
        self._context = multiprocessing.get_context("spawn")
        self._board = WorkerBoard(settings.workers, self._context)
        self._reserved = [
            reserve_port(settings.host, settings.grpc_port),
            reserve_port(settings.host, settings.http_port),
        ]
        self.grpc_port, self.http_port = (port for _, port in self._reserved)
        self._settings = settings.model_copy(
            update={"grpc_port": self.grpc_port, "http_port": self.http_port, "workers": 1}
        )
        self._processes: list[Any] = [None] * settings.workers

    def _spawn(self, index: int, restart: bool = False) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(self._settings, index, self._board, os.getpid(), restart),
            name=f"serving-worker-{index}",
        )
        process.start()
        self._processes[index] = process
        log.info("serving_worker_started", worker=index, pid=process.pid)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the workers until ``stop`` is set."""
        with _shared_metrics() as metrics:
            await self._supervise(stop, metrics)

    async def _supervise(self, stop: asyncio.Event, metrics: str) -> None:
        for index in range(len(self._processes)):
            self._spawn(index)
        log.info(
            "serving_workers_started",
            workers=len(self._processes),
            grpc_port=self.grpc_port,
            http_port=self.http_port,
        )
        backoff = [RESTART_BACKOFF_SECONDS[0]] * len(self._processes)
        restart_at: dict[int, float] = {}
        try:
            while not stop.is_set():
                for index, process in enumerate(self._processes):
                    if index in restart_at:
                        if time.monotonic() >= restart_at[index]:
                            del restart_at[index]
                            self._spawn(index, restart=True)
                        continue
                    if process.exitcode is None:
                        continue
                    wait = backoff[index]
                    backoff[index] = min(wait * 2, RESTART_BACKOFF_SECONDS[1])
                    restart_at[index] = time.monotonic() + wait
                    reason = f"exited with code {process.exitcode}; restarting in {wait:.0f}s"
                    self._board.post(index, [reason])
                    mark_process_dead(process.pid, metrics)  # its gauges; its counts stay in the totals
                    log.warning("serving_worker_exited", worker=index, pid=process.pid, code=process.exitcode)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._stop_all)
            for sock, _ in self._reserved:
                sock.close()

    def _stop_all(self) -> None:
        running = [p for p in self._processes if p is not None and p.exitcode is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.warning("serving_worker_killed", pid=process.pid, after_seconds=STOP_GRACE_SECONDS)
                process.kill()
                process.join(5)


@contextlib.contextmanager
def _shared_metrics() -> Iterator[str]:
    """A new directory for the workers' metrics, in the environment the workers are spawned
    with (their prometheus_client, imported fresh, then writes there); removed at the end."""
    directory = tempfile.mkdtemp(prefix="mlops-serving-metrics-")
    previous = os.environ.get(SHARED_DIRECTORY_VARIABLE)
    os.environ[SHARED_DIRECTORY_VARIABLE] = directory
    try:
        yield directory
    finally:
        if previous is None:
            del os.environ[SHARED_DIRECTORY_VARIABLE]
        else:
            os.environ[SHARED_DIRECTORY_VARIABLE] = previous
        shutil.rmtree(directory, ignore_errors=True)


def worker_main(
    settings: ServingSettings, index: int, board: WorkerBoard, parent: int, restart: bool
) -> None:
    """One worker: the serving app on the shared ports, until SIGTERM (or its parent dies).
    With ``restart`` it listens only once it has its models: the others answer meanwhile."""
    from services.common.entrypoint import run_service
    from services.common.localstack import die_with_parent
    from services.serving.app import ServingApp

    # A parent killed without a chance to stop its workers takes them with it (SIGTERM:
    # they stop cleanly). The parent may have died already, before this ran.
    die_with_parent()
    if os.getppid() != parent:
        return

    async def run(settings: ServingSettings, stop: asyncio.Event) -> None:
        import structlog

        from services.common.lifecycle import run_until

        structlog.contextvars.bind_contextvars(worker=index)
        app = ServingApp(settings, peers=_Peers(board, index), listen_when_synced=restart)
        await run_until(app, stop)

    run_service("serving", settings, run)


class _Peers:
    """A worker's view of the board: post its own problems, read the others'."""

    def __init__(self, board: WorkerBoard, index: int):
        self._board = board
        self._index = index

    def post(self, problems: list[str]) -> None:
        self._board.post(self._index, problems)

    def problems(self) -> list[str]:
        return self._board.problems(excluding=self._index)


async def run(settings: ServingSettings, stop: asyncio.Event) -> None:
    """Run serving until ``stop`` is set: in this process with one worker, else a pool."""
    if settings.workers == 1:
        from services.serving.app import run as run_app

        await run_app(settings, stop)
        return
    await WorkerPool(settings).run(stop)
