"""Adaptive micro-batching: concurrent requests for one model version share predict calls.

Tree ensembles cost about the same per call whatever the batch size, so single-row
traffic only scales by batching. The batcher runs one predict call at a time per
version, in a thread so the event loop keeps accepting requests; whatever queued up
while a call ran becomes the next batch. Batches therefore grow with load and an idle
server adds no latency. ``max_wait`` can add a short wait for more rows once the first
request is in, for traffic that arrives too sparsely to batch by itself; it applies only
while requests overlap, so an isolated one never waits.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.errors import PlatformError
from services.serving.errors import InvalidInput, Overloaded
from services.serving.predictor import Outputs

SETTLE_TURNS = 4
PredictFn = Callable[[np.ndarray[Any, Any]], Outputs]


@dataclass
class _Pending:
    matrix: np.ndarray[Any, Any]
    future: asyncio.Future[Outputs]
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.matrix.shape[0])


class BatchObserver:
    """Receives what the batcher does (the service hangs its metrics here)."""

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        """A predict call ran."""

    def queue(self, rows: int) -> None:
        """Rows now waiting."""


class Batcher:
    """Queues requests for one model version and runs them in batches.

    Parameters
    ----------
    predict
        The version's predict function, run in ``executor``.
    executor
        Where predict calls run; ``None`` runs them on the event loop (tests, benchmarks).
    max_batch_rows
        Rows per predict call at most; a request larger than this runs alone. 1 turns batching off.
    max_wait
        Seconds to wait for more requests once one is queued (0: none), while traffic is
        concurrent (the last batch held several requests, or more were waiting): an isolated
        request never waits.
    max_queue_rows
        Rows allowed to wait; a request that would exceed it is refused with :class:`Overloaded`.
    inline_rows
        Batches of at most this many rows run on the event loop rather than in ``executor``
        (0: none). Cheaper per call, but the loop admits no new request meanwhile, so
        batches stay small under gRPC; see ``ServingSettings.inline_predict_rows``.
    """

    def __init__(
        self,
        predict: PredictFn,
        executor: concurrent.futures.Executor | None,
        *,
        max_batch_rows: int = 256,
        max_wait: float = 0.0,
        max_queue_rows: int = 8192,
        inline_rows: int = 0,
        observer: BatchObserver | None = None,
        label: str = "",
    ):
        self._predict = predict
        self._executor = executor
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait
        self.max_queue_rows = max_queue_rows
        self.inline_rows = inline_rows
        self._observer = observer or BatchObserver()
        self._label = label
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrival: asyncio.Future[None] | None = None
        """Set by the next submit while the batcher waits for company."""
        self._queued_rows = 0
        self._concurrent = False
        self._drain: asyncio.Task[None] | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, matrix: np.ndarray[Any, Any]) -> Outputs:
        """The outputs for ``matrix``'s rows, predicted together with whatever else is waiting."""
        rows = int(matrix.shape[0])
        if self._queue and self._queued_rows + rows > self.max_queue_rows:
            raise Overloaded(
                f"model {self._label} has {self._queued_rows} rows waiting (limit {self.max_queue_rows}); "
                "retry later"
            )
        pending = _Pending(matrix, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_rows += rows
        self._observer.queue(self._queued_rows)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run(), name=f"batcher:{self._label}")
        return await pending.future

    async def run(self, function: PredictFn, matrix: np.ndarray[Any, Any]) -> Outputs:
        """``function(matrix)`` where this version's predict calls run, outside the batches
        (for work few requests ask for, such as explanations)."""
        if self._executor is None:
            return function(matrix)
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, matrix)

    async def _run(self) -> None:
        """Predict batch after batch until nothing waits; started again by the next submit."""
        while self._queue:
            batch = await self._next_batch()
            if batch:
                await self._execute(batch)

    async def _next_batch(self) -> list[_Pending]:
        # Requests that arrived together are still on their way to the queue (decoding,
        # checking): give them a turn of the loop, for as long as more keep arriving.
        for _ in range(SETTLE_TURNS):
            if self._queued_rows >= self.max_batch_rows:
                break
            waiting = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == waiting:
                break
        # Waiting only pays when requests overlap; a lone request goes at once.
        if self.max_wait > 0 and self._concurrent and self._queued_rows < self.max_batch_rows:
            # A bare future and a timer: asyncio.wait_for built a task per wake-up, and this
            # wakes up once per arriving request.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait
            while self._queued_rows < self.max_batch_rows and loop.time() < deadline:
                arrival = self._arrival = loop.create_future()
                timer = loop.call_at(deadline, _resolve_none, arrival)
                try:
                    await arrival
                finally:
                    timer.cancel()
                    self._arrival = None
        batch: list[_Pending] = []
        rows = 0
        while self._queue and (not batch or rows + self._queue[0].rows <= self.max_batch_rows):
            pending = self._queue.popleft()
            self._queued_rows -= pending.rows
            if pending.future.cancelled():
                continue
            batch.append(pending)
            rows += pending.rows
        self._observer.queue(self._queued_rows)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        self._concurrent = len(batch) > 1 or bool(self._queue)
        matrix = batch[0].matrix if len(batch) == 1 else np.concatenate([p.matrix for p in batch])
        started = time.perf_counter()
        try:
            outputs = await self._call(matrix)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0].future, exc)
                return
            # One request's rows may be what the model refuses: run each alone so only it fails.
            for pending in batch:
                try:
                    outputs = await self._call(pending.matrix)
                except Exception as single_exc:
                    _fail(pending.future, single_exc)
                else:
                    _resolve(pending.future, outputs)
            return
        self._observer.batch(int(matrix.shape[0]), len(batch), time.perf_counter() - started)
        if len(batch) == 1:
            _resolve(batch[0].future, outputs)
            return
        offset = 0
        for pending in batch:
            end = offset + pending.rows
            _resolve(pending.future, {name: array[offset:end] for name, array in outputs.items()})
            offset = end

    async def _call(self, matrix: np.ndarray[Any, Any]) -> Outputs:
        if self._executor is None or matrix.shape[0] <= self.inline_rows:
            return self._predict(matrix)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, matrix)


def _resolve_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve(future: asyncio.Future[Outputs], outputs: Outputs) -> None:
    if not future.done():
        future.set_result(outputs)


def _fail(future: asyncio.Future[Outputs], exc: Exception) -> None:
    if future.done():
        return
    if isinstance(exc, PlatformError):
        future.set_exception(exc)
    elif isinstance(exc, ValueError | TypeError):
        # scikit-learn raises ValueError for inputs it cannot use (an unknown category, say).
        future.set_exception(InvalidInput(f"the model refused the input: {exc}"))
    else:
        future.set_exception(exc)
