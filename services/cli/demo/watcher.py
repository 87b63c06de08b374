"""The demo's eyes on the platform: its own topics, followed as the loop runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.common.aliases import PRODUCTION
from services.common.events import EnvelopeError, IncomingRecord, Topics, decode
from services.common.kafka import TailReader
from services.common.proto.mlops.v1 import events_pb2


class DemoFailed(Exception):
    """The loop did not close; the message says where it stopped."""


class LoopWatcher:
    """Follows the platform's own topics (train results, model events, drift, train requests
    and labels) from the moment the demo starts, so each step is observed, not polled."""

    def __init__(self, bootstrap: str, topics: Topics, run_id: str, model: str):
        self._bootstrap = bootstrap
        self._topics = topics
        self._run_id = run_id
        self._model = model
        self._reader: TailReader | None = None
        self._task: asyncio.Task[None] | None = None
        self.train_results: dict[str, events_pb2.TrainResult] = {}
        self.drift_events: list[tuple[events_pb2.DriftEvent, float]] = []
        self.retrain_requests: list[events_pb2.TrainRequest] = []
        self.production_version = 0
        self.labels_seen = 0
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        names = [
            self._topics.train_results,
            self._topics.model_events,
            self._topics.drift,
            self._topics.train_requests,
            self._topics.labels,
        ]
        self._reader = TailReader(self._bootstrap, names, client_id="mlops-demo", fetch_max_wait_ms=50)
        await self._reader.start()
        self._task = asyncio.create_task(self._run(), name="demo-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._reader:
            await self._reader.stop()

    async def wait_for(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), within)
            except TimeoutError:
                raise DemoFailed(f"timed out after {within:.0f}s waiting for {what}") from None

    async def _run(self) -> None:
        assert self._reader is not None
        while True:
            records = await self._reader.read(timeout_ms=200)
            if not records:
                continue
            for record in records:
                self._observe(record)
            async with self._changed:
                self._changed.notify_all()

    def _observe(self, record: IncomingRecord) -> None:
        topics = self._topics
        try:
            if record.topic == topics.train_results:
                result = decode(record, events_pb2.TrainResult).message
                if result.model_name == self._model:
                    self.train_results[result.request_id] = result
            elif record.topic == topics.model_events:
                event = decode(record, events_pb2.ModelEvent).message
                if (
                    event.model_name == self._model
                    and event.alias == PRODUCTION
                    and event.type == events_pb2.MODEL_EVENT_TYPE_ALIAS_SET
                ):
                    self.production_version = event.version
            elif record.topic == topics.drift:
                drift = decode(record, events_pb2.DriftEvent).message
                if drift.model_name == self._model and drift.kind == events_pb2.DRIFT_KIND_CONCEPT:
                    self.drift_events.append((drift, time.monotonic()))
            elif record.topic == topics.train_requests:
                request = decode(record, events_pb2.TrainRequest).message
                if request.model_name == self._model and request.trigger == events_pb2.TRAIN_TRIGGER_DRIFT:
                    self.retrain_requests.append(request)
            elif record.topic == topics.labels:
                label = decode(record, events_pb2.LabelRecord).message
                if label.event_id.startswith(self._run_id):
                    self.labels_seen += 1
        except EnvelopeError:
            pass  # not ours to judge: the owning consumer dead-letters it
