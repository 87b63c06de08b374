"""One run of the demo's scenario against a running platform (see :mod:`services.cli.demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.demo.measures import LiveAccuracy, SentEvents, judge
from services.cli.demo.report import DemoReport
from services.cli.demo.spec import DATASET, demo_schema, demo_spec, raw_event
from services.cli.demo.stream import FEATURES, DriftingStream, Sample
from services.cli.demo.watcher import DemoFailed, LoopWatcher
from services.common.auth import bearer_metadata
from services.common.clients.base import open_channel
from services.common.clients.datasets import DatasetClient
from services.common.clients.registry import AUTO, RegistryClient
from services.common.errors import NotFound, PlatformError
from services.common.events import Topics, encode
from services.common.grpc_errors import translating
from services.common.kafka import create_producer, publish
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import events_pb2
from services.common.tls import ClientTls


@dataclass(frozen=True)
class Endpoints:
    """Where the demo finds the platform."""

    kafka_bootstrap: str
    registry_address: str
    datasets_address: str
    serving_address: str
    monitor_url: str
    token: str
    topic_prefix: str = "mlops"
    ca: str = ""
    """The CA the services' TLS certificates chain to (empty: they speak plaintext)."""

    @property
    def tls(self) -> ClientTls | None:
        return ClientTls(ca_file=Path(self.ca)) if self.ca else None


@dataclass(frozen=True)
class DemoConfig:
    """The scenario's sizes and pace."""

    bootstrap_samples: int = 2000
    """Events sent before the first model exists: its training data."""
    pre_drift_samples: int = 1500
    """Samples served by the first model before the concept changes."""
    post_swap_samples: int = 1500
    """Samples served by the retrained model, to measure its accuracy."""
    post_drift_timeout: float = 150.0
    """Give up if the loop has not closed this many seconds after the drift began."""
    rate: float = 400.0
    """Samples per second (predictions, each followed by its event)."""
    family: str = ""
    """Train one estimator family (``xgboost``, ``lightgbm`` ...) instead of the default search."""
    concurrency: int = 8
    """Prediction requests in flight."""
    seed: int = 7
    min_accuracy_gain: float = 0.15
    """How much better than the drifted old model the new one must do for the loop to count as closed."""


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ClosedLoopDemo:
    """One run of the scenario against ``endpoints``; :meth:`run` returns the report."""

    def __init__(
        self,
        endpoints: Endpoints,
        config: DemoConfig,
        console: Console | None = None,
        model: str | None = None,
    ):
        self._endpoints = endpoints
        self._config = config
        self._console = console or Console(stderr=True)
        run = uuid.uuid4().hex[:8]
        self._run_id = f"demo-{run}"
        self._named = model is not None
        self.model = model or f"demo-classifier-{run}"
        """The model this run trains: its own, so that no earlier run's cooldown holds its retrain."""
        self._topics = Topics(endpoints.topic_prefix)
        self._metadata = bearer_metadata(endpoints.token)
        self.report = DemoReport(run_id=self._run_id, model_name=self.model)
        self._pending_sends: list[asyncio.Future[object]] = []
        self._sent = SentEvents()
        self._progress_bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self._console,
        )

    async def run(self) -> DemoReport:
        started = time.monotonic()
        run_started = datetime.now(UTC)
        token = self._endpoints.token
        watcher = LoopWatcher(self._endpoints.kafka_bootstrap, self._topics, self._run_id, self.model)
        producer = create_producer(self._endpoints.kafka_bootstrap, "mlops-demo", linger_ms=10)
        tls = self._endpoints.tls
        registry = RegistryClient(self._endpoints.registry_address, lambda: token, tls=tls)
        datasets = DatasetClient(self._endpoints.datasets_address, lambda: token, tls=tls)
        channel = open_channel(self._endpoints.serving_address, tls=tls)
        self._serving = translating(oip_grpc.GRPCInferenceServiceStub(channel))
        self._producer = producer
        self._watcher = watcher
        await producer.start()
        await watcher.start()
        try:
            with self._progress_bar:
                await self._prepare(registry, datasets)
                await self._check_cooldown()
                stream = DriftingStream(
                    self._run_id,
                    drift_at=self._config.bootstrap_samples + self._config.pre_drift_samples,
                    seed=self._config.seed,
                )
                await self._bootstrap(stream)
                await self._first_model(registry, run_started)
                await self._traffic(stream, registry)
        finally:
            self.report.total_seconds = round(time.monotonic() - started, 1)
            await watcher.stop()
            await producer.stop()
            await channel.close()
            await registry.close()
            await datasets.close()
        return self.report

    @property
    def events_sent(self) -> int:
        """Events this run handed to the broker (bootstrap and traffic)."""
        return len(self._sent)

    def _say(self, message: str) -> None:
        self._console.log(message)

    async def _prepare(self, registry: RegistryClient, datasets: DatasetClient) -> None:
        schema = demo_schema()
        try:
            current = await datasets.get_schema(DATASET)
            same = list(current.fields) == list(schema.fields) and current.label_field == schema.label_field
        except NotFound:
            same = False
        if not same:
            registered = await datasets.register_schema(schema)
            self._say(f"dataset schema [bold]{DATASET}[/] v{registered.version} registered")
        await registry.create_model(
            self.model, description="The demo's drifting classifier.", policy=AUTO, exist_ok=True
        )
        named = "named with --model" if self._named else "fresh for this run"
        self._say(f"model [bold]{self.model}[/] ({named})")

    async def _retrain_status(self) -> dict[str, Any] | None:
        """What the monitor says of the model's retrains (None: it does not watch the model yet,
        or cannot be asked)."""
        url = f"{self._endpoints.monitor_url}/v1/status/{quote(self.model, safe='')}"
        headers = {"authorization": f"Bearer {self._endpoints.token}"}
        try:
            tls = self._endpoints.tls
            async with httpx.AsyncClient(timeout=10, verify=tls.ssl_context() if tls else True) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return dict(response.json().get("retrain") or {})

    async def _check_cooldown(self) -> None:
        """A model named with ``--model`` may still be in the cooldown of an earlier retrain:
        then the loop cannot close, and the demo says so at once rather than after waiting."""
        retrain = await self._retrain_status() or {}
        until, asked = retrain.get("cooldown_until"), retrain.get("last_requested_at")
        if until is not None and asked is not None and until > time.time():
            raise DemoFailed(
                f"the monitor will not ask for a retrain of {self.model} before {when(until)} (the cooldown "
                f"after its retrain requested at {when(asked)}): run the demo without --model (a fresh "
                "model each run), or after that time"
            )

    async def _send_events(self, samples: list[Sample]) -> None:
        """Hand the samples' events to the producer without waiting for the broker: traffic
        keeps its pace, and :meth:`_flush_events` surfaces any failed delivery."""
        # Plain JSON, as a producer outside the platform sends it.
        topic = self._topics.raw_events
        for sample in samples:
            event_time = datetime.now(UTC)
            self._sent.add(event_time.timestamp(), sample.index)
            self._pending_sends.append(
                await self._producer.send(topic, raw_event(sample, event_time), key=sample.event_id.encode())
            )

    async def _flush_events(self) -> None:
        pending, self._pending_sends = self._pending_sends, []
        await asyncio.gather(*pending)

    async def _bootstrap(self, stream: DriftingStream) -> None:
        count = self._config.bootstrap_samples
        task = self._progress_bar.add_task("bootstrap events ingested", total=count)
        await self._send_events(stream.take(count))
        await self._flush_events()
        watcher = self._watcher

        def ingested() -> bool:
            self._progress_bar.update(task, completed=min(count, watcher.labels_seen))
            return watcher.labels_seen >= count

        await watcher.wait_for(ingested, 60, f"ingest to store {count} bootstrap events")

    async def _first_model(self, registry: RegistryClient, run_started: datetime) -> None:
        request = events_pb2.TrainRequest(
            request_id=f"{self._run_id}-initial",
            idempotency_key=f"{self._run_id}-initial",
            model_name=self.model,
            trigger=events_pb2.TRAIN_TRIGGER_INITIAL,
            spec=demo_spec(self.model, run_started, self._config.family),
            requested_by="demo",
        )
        request.requested_at.GetCurrentTime()
        await publish(
            self._producer, [encode(self._topics.train_requests, request, source="/demo", key=self.model)]
        )
        task = self._progress_bar.add_task("first model trained and promoted", total=1)
        result = await self._train_result(request.request_id, within=90)
        version = result.version
        await self._watcher.wait_for(
            lambda: self._watcher.production_version == version, 30, f"version {version} in production"
        )
        await self._wait_served(version)
        self._progress_bar.update(task, completed=1)
        self.report.first_version = version
        self.report.first_holdout_accuracy = round(result.metrics.get("accuracy", float("nan")), 4)
        self._say(
            f"version {version} trained, promoted and served: holdout accuracy "
            f"{self.report.first_holdout_accuracy:.3f}"
        )

    async def _train_result(self, request_id: str, within: float) -> events_pb2.TrainResult:
        finished = {
            events_pb2.TRAIN_STATUS_REGISTERED,
            events_pb2.TRAIN_STATUS_GATES_FAILED,
            events_pb2.TRAIN_STATUS_FAILED,
        }
        results = self._watcher.train_results
        await self._watcher.wait_for(
            lambda: request_id in results and results[request_id].status in finished,
            within,
            f"train request {request_id} to finish",
        )
        result = results[request_id]
        if result.status != events_pb2.TRAIN_STATUS_REGISTERED or not result.version:
            status = events_pb2.TrainStatus.Name(result.status)
            raise DemoFailed(f"train request {request_id} ended {status}: {result.error}")
        return result

    async def _wait_served(self, version: int, within: float = 30) -> None:
        deadline = time.monotonic() + within
        request = oip.ModelReadyRequest(name=self.model, version=str(version))
        while time.monotonic() < deadline:
            with contextlib.suppress(PlatformError):
                response = await self._serving.ModelReady(request, metadata=self._metadata, timeout=2)
                if response.ready:
                    return
            await asyncio.sleep(0.1)
        raise DemoFailed(f"serving did not load version {version} within {within:.0f}s")

    async def _predict(self, sample: Sample) -> tuple[str, int]:
        request = oip.ModelInferRequest(model_name=self.model, id=sample.event_id)
        tensor = request.inputs.add(name="features", datatype="FP64", shape=[1, len(FEATURES)])
        tensor.contents.fp64_contents.extend(float(v) for v in sample.features)
        request.outputs.add(name="label")
        response = await self._serving.ModelInfer(request, metadata=self._metadata, timeout=5)
        label = response.outputs[0].contents.bytes_contents[0].decode()
        return label, int(response.model_version)

    async def _traffic(self, stream: DriftingStream, registry: RegistryClient) -> None:
        config, report, watcher = self._config, self.report, self._watcher
        report.drift_onset_sample = stream.drift_at
        live = LiveAccuracy(first_version=report.first_version)
        onset_time: float | None = None
        swap_time: float | None = None
        wave = max(1, config.concurrency)
        interval = wave / config.rate
        task = self._progress_bar.add_task("samples served", total=None)
        next_wave = time.monotonic()
        while True:
            samples = stream.take(wave)
            results = await asyncio.gather(*(self._predict(s) for s in samples), return_exceptions=True)
            answered = []
            for sample, result in zip(samples, results, strict=True):
                if isinstance(result, BaseException):
                    report.failed_requests += 1
                    continue
                label, version = result
                answered.append(sample)
                if live.add(sample, label, version):
                    swap_time = time.monotonic()
                    report.new_version = version
                    self._say(f"serving answers with version {version}: swapped in while traffic ran")
            await self._send_events(answered)
            if len(self._pending_sends) >= 1000:
                await self._flush_events()
            if samples[0].drifted and onset_time is None:
                onset_time = time.monotonic()
                self._say(f"concept drift starts at sample {stream.drift_at}")
            self._progress_bar.update(task, advance=len(samples))
            if watcher.drift_events and report.drift_detected_at_sample < 0:
                self._detected(samples[-1].index, stream.drift_at, onset_time)
            if live.after_swap.total >= config.post_swap_samples:
                break
            if onset_time is not None and time.monotonic() - onset_time > config.post_drift_timeout:
                report.verdict = (
                    f"the loop did not close within {config.post_drift_timeout:.0f}s of the drift"
                )
                break
            if self._retrain_failed():
                break
            next_wave += interval
            delay = next_wave - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await self._flush_events()
        report.accuracy_before_drift = round(live.before.value, 4)
        report.accuracy_after_drift_old_model = round(live.after_drift_old.value, 4)
        report.accuracy_after_swap = round(live.after_swap.value, 4)
        report.retrain_requests = len(watcher.retrain_requests)
        if watcher.retrain_requests:
            report.retrain_request_id = watcher.retrain_requests[0].request_id
        if swap_time is not None and onset_time is not None:
            report.seconds_drift_to_swap = round(swap_time - onset_time, 2)
        if report.new_version:
            registered = await registry.get_version(self.model, report.new_version)
            report.new_holdout_accuracy = round(registered.metrics.get("accuracy", float("nan")), 4)
            report.new_version_gates = {gate.name: gate.passed for gate in registered.gates}
        problems = judge(report, watcher.production_version, config.min_accuracy_gain)
        if problems and not report.retrain_requests:
            await self._explain_hold()
        report.loop_closed = not problems
        report.verdict = "; ".join(problems) or "the loop closed"

    def _detected(self, at_sample: int, true_onset: int, onset_time: float | None) -> None:
        """The monitor's drift event reached the demo while it sent sample ``at_sample``."""
        report = self.report
        drift, _seen = self._watcher.drift_events[0]
        report.drift_event_id = drift.event_id
        report.drift_detected_at_sample = at_sample
        report.detection_delay_samples = drift.window_size
        report.onset_error_samples = self._sent.samples_between(
            true_onset, drift.onset_time.ToDatetime(UTC).timestamp()
        )
        report.monitor_detector = drift.detector
        report.seconds_drift_to_detection = round(time.monotonic() - (onset_time or time.monotonic()), 2)
        where = "after" if report.onset_error_samples >= 0 else "before"
        self._say(
            f"monitor detected drift ({drift.detector}, error rate {drift.statistic:.2f}) "
            f"{report.detection_delay_samples} samples after the change, which it located "
            f"{abs(report.onset_error_samples)} samples {where} the true onset"
        )

    async def _explain_hold(self) -> None:
        """No retrain was asked for: say what the monitor holds it back with, if anything."""
        hold = ((await self._retrain_status()) or {}).get("hold")
        if hold:
            until = f" until {when(hold['until'])}" if hold.get("until") else ""
            self.report.monitor_hold = f"{hold['reason']}{until}: {hold['detail']}"
            self._say(f"[red]the monitor holds the retrain back[/]: {self.report.monitor_hold}")

    def _retrain_failed(self) -> bool:
        """Whether the drift's retrain ended without a version to promote (the monitor would
        ask again one cooldown later, longer than a demo waits)."""
        for request in self._watcher.retrain_requests:
            result = self._watcher.train_results.get(request.request_id)
            if result is not None and result.status in (
                events_pb2.TRAIN_STATUS_GATES_FAILED,
                events_pb2.TRAIN_STATUS_FAILED,
            ):
                status = events_pb2.TrainStatus.Name(result.status)
                failed = [f"{g.name} ({g.detail})" for g in result.gates if not g.passed]
                self._say(
                    f"[red]retrain {request.request_id} ended {status}[/]: {result.error or '; '.join(failed)}"
                )
                return True
        return False
