"""``mlops demo``: the closed loop, end to end, on the local stack.

The demo plays a product that sends events and asks for predictions, and watches the
platform do the rest by itself:

1. events of a synthetic stream go to ``<prefix>.events.raw``; ingest validates and stores them;
2. one initial train request; the trainer trains, gates and registers version 1, the registry
   promotes it, serving loads it;
3. traffic: every sample is a gRPC ``ModelInfer`` (request id = event id), then its event, label
   included, goes to the raw topic, so the monitor can join the prediction with its label;
4. mid-stream the concept changes; the monitor's detector fires, it asks for one retrain;
   the trainer trains on data since the onset, the new version passes the gates against the
   old one and is promoted; serving swaps it in while traffic continues;
5. the demo reports the figures and exits 0 only if the loop really closed.

Runs against the stack ``mlops up`` is running, or starts one of its own and stops it after.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.demo_stream import FEATURES, Accuracy, DriftingStream, Sample
from services.cli.stack import LocalStack, StackError, StackPorts, running_stack
from services.common.auth import bearer_metadata
from services.common.clients.base import open_channel
from services.common.clients.datasets import DatasetClient
from services.common.clients.registry import AUTO, RegistryClient
from services.common.errors import NotFound, PlatformError
from services.common.events import EnvelopeError, IncomingRecord, Topics, decode, encode
from services.common.grpc_errors import translating
from services.common.kafka import create_producer, publish
from services.common.localstack import port_open
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import datasets_pb2, events_pb2, model_pb2

MODEL_NAME = "demo-classifier"
DATASET = "demo"
DEFAULT_WORKDIR = Path(".mlops")


@dataclass(frozen=True)
class Endpoints:
    """Where the demo finds the platform."""

    kafka_bootstrap: str
    registry_address: str
    datasets_address: str
    serving_address: str
    token: str
    topic_prefix: str = "mlops"


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
    concurrency: int = 8
    """Prediction requests in flight."""
    seed: int = 7
    min_accuracy_gain: float = 0.15
    """How much better than the drifted old model the new one must do for the loop to count as closed."""


@dataclass
class DemoReport:
    """What happened, in the figures the demo prints and writes to JSON."""

    run_id: str
    model_name: str = MODEL_NAME
    first_version: int = 0
    first_holdout_accuracy: float = float("nan")
    accuracy_before_drift: float = float("nan")
    accuracy_after_drift_old_model: float = float("nan")
    drift_onset_sample: int = 0
    drift_detected_at_sample: int = -1
    """The demo's sample counter when the drift event reached it (pipeline lag included)."""
    detection_delay_samples: int = -1
    """Labelled samples after the change the monitor's detector needed before its alarm."""
    onset_error_samples: int = 0
    """Samples between the true onset and the onset the monitor located (positive: late)."""
    monitor_detector: str = ""
    retrain_requests: int = 0
    retrain_request_id: str = ""
    new_version: int = 0
    new_holdout_accuracy: float = float("nan")
    new_version_gates: dict[str, bool] = field(default_factory=dict)
    accuracy_after_swap: float = float("nan")
    seconds_drift_to_detection: float = float("nan")
    seconds_drift_to_swap: float = float("nan")
    failed_requests: int = 0
    total_seconds: float = 0.0
    loop_closed: bool = False
    verdict: str = ""

    def to_json(self) -> str:
        def clean(value: object) -> object:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return json.dumps({k: clean(v) for k, v in asdict(self).items()}, indent=2)


class DemoFailed(Exception):
    """The loop did not close; the message says where it stopped."""


def demo_spec(run_started: datetime) -> model_pb2.ModelSpec:
    """What the platform trains: a search over two families, gated before promotion."""
    start = Timestamp()
    start.FromDatetime(run_started)
    return model_pb2.ModelSpec(
        model_name=MODEL_NAME,
        dataset=DATASET,
        features=list(FEATURES),
        target="label",
        task=model_pb2.TASK_CLASSIFICATION,
        estimators=[
            model_pb2.EstimatorSpec(
                family="logistic_regression",
                search_space_json=json.dumps({"C": {"low": 0.01, "high": 100, "log": True}}),
            ),
            model_pb2.EstimatorSpec(
                family="hist_gradient_boosting",
                params_json=json.dumps({"max_iter": 60}),
                search_space_json=json.dumps(
                    {"learning_rate": {"low": 0.03, "high": 0.3, "log": True}, "max_leaf_nodes": [7, 15, 31]}
                ),
            ),
        ],
        metric="accuracy",
        time_budget_seconds=60,
        window=model_pb2.DataWindow(dataset=DATASET, start_time=start, max_rows=5000, min_rows=400),
        gates=model_pb2.Gates(
            min_metric=0.75, max_regression=0.02, max_noise_drop=0.05, max_missing_drop=0.4
        ),
        seed=7,
        holdout_fraction=0.25,
    )


def demo_schema() -> datasets_pb2.DatasetSchema:
    number = datasets_pb2.FIELD_TYPE_NUMBER
    fields = [datasets_pb2.FieldSpec(name="event_id", type=datasets_pb2.FIELD_TYPE_TEXT, required=True)]
    fields.append(datasets_pb2.FieldSpec(name="entity_id", type=datasets_pb2.FIELD_TYPE_TEXT, required=True))
    fields.append(datasets_pb2.FieldSpec(name="ts", type=datasets_pb2.FIELD_TYPE_TIMESTAMP, required=True))
    fields += [
        datasets_pb2.FieldSpec(
            name=name, type=number, required=True, has_min=True, min=-20, has_max=True, max=20
        )
        for name in FEATURES
    ]
    fields.append(
        datasets_pb2.FieldSpec(
            name="label", type=number, required=False, has_min=True, min=0, has_max=True, max=1
        )
    )
    return datasets_pb2.DatasetSchema(
        name=DATASET,
        fields=fields,
        label_field="label",
        event_id_field="event_id",
        entity_id_field="entity_id",
        timestamp_field="ts",
        description="The demo's synthetic stream: eight standard normals and a binary label.",
    )


def raw_event(sample: Sample, event_time: datetime, with_label: bool = True) -> bytes:
    event: dict[str, object] = {
        "dataset": DATASET,
        "event_id": sample.event_id,
        "entity_id": f"user-{sample.index % 97}",
        "ts": event_time.isoformat(),
    }
    event.update({name: float(value) for name, value in zip(FEATURES, sample.features, strict=True)})
    if with_label:
        event["label"] = sample.label
    return json.dumps(event).encode()


class LoopWatcher:
    """Follows the platform's own topics (train results, model events, drift, train requests
    and labels) from the moment the demo starts, so each step is observed, not polled."""

    def __init__(self, bootstrap: str, topics: Topics, run_id: str):
        self._bootstrap = bootstrap
        self._topics = topics
        self._run_id = run_id
        self._consumer: AIOKafkaConsumer | None = None
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
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None, fetch_max_wait_ms=50)
        await consumer.start()
        partitions = [
            TopicPartition(name, p) for name in names for p in (consumer.partitions_for_topic(name) or {0})
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="demo-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    async def wait_for(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), within)
            except TimeoutError:
                raise DemoFailed(f"timed out after {within:.0f}s waiting for {what}") from None

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            if not batches:
                continue
            for records in batches.values():
                for r in records:
                    self._observe(IncomingRecord.from_consumer_record(r))
            async with self._changed:
                self._changed.notify_all()

    def _observe(self, record: IncomingRecord) -> None:
        topics = self._topics
        try:
            if record.topic == topics.train_results:
                result = decode(record, events_pb2.TrainResult).message
                if result.model_name == MODEL_NAME:
                    self.train_results[result.request_id] = result
            elif record.topic == topics.model_events:
                event = decode(record, events_pb2.ModelEvent).message
                if (
                    event.model_name == MODEL_NAME
                    and event.alias == "production"
                    and event.type == events_pb2.MODEL_EVENT_TYPE_ALIAS_SET
                ):
                    self.production_version = event.version
            elif record.topic == topics.drift:
                drift = decode(record, events_pb2.DriftEvent).message
                if drift.model_name == MODEL_NAME and drift.kind == events_pb2.DRIFT_KIND_CONCEPT:
                    self.drift_events.append((drift, time.monotonic()))
            elif record.topic == topics.train_requests:
                request = decode(record, events_pb2.TrainRequest).message
                if request.model_name == MODEL_NAME and request.trigger == events_pb2.TRAIN_TRIGGER_DRIFT:
                    self.retrain_requests.append(request)
            elif record.topic == topics.labels:
                label = decode(record, events_pb2.LabelRecord).message
                if label.event_id.startswith(self._run_id):
                    self.labels_seen += 1
        except EnvelopeError:
            pass  # not ours to judge: the owning consumer dead-letters it


class ClosedLoopDemo:
    """One run of the scenario against ``endpoints``; :meth:`run` returns the report."""

    def __init__(self, endpoints: Endpoints, config: DemoConfig, console: Console | None = None):
        self._endpoints = endpoints
        self._config = config
        self._console = console or Console(stderr=True)
        self._run_id = "demo-" + uuid.uuid4().hex[:8]
        self._topics = Topics(endpoints.topic_prefix)
        self._metadata = bearer_metadata(endpoints.token)
        self.report = DemoReport(run_id=self._run_id)
        self._pending_sends: list[asyncio.Future[object]] = []
        self._event_times: list[tuple[float, int]] = []
        """(event time, sample index) of every event sent, in sending order."""
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
        watcher = LoopWatcher(self._endpoints.kafka_bootstrap, self._topics, self._run_id)
        producer = create_producer(self._endpoints.kafka_bootstrap, "mlops-demo", linger_ms=10)
        registry = RegistryClient(self._endpoints.registry_address, lambda: token)
        datasets = DatasetClient(self._endpoints.datasets_address, lambda: token)
        channel = open_channel(self._endpoints.serving_address)
        self._serving = translating(oip_grpc.GRPCInferenceServiceStub(channel))
        self._producer = producer
        self._watcher = watcher
        await producer.start()
        await watcher.start()
        try:
            with self._progress_bar:
                await self._prepare(registry, datasets)
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
            MODEL_NAME, description="The demo's drifting classifier.", policy=AUTO, exist_ok=True
        )

    async def _send_events(self, samples: list[Sample]) -> None:
        """Hand the samples' events to the producer without waiting for the broker: traffic
        keeps its pace, and :meth:`_flush_events` surfaces any failed delivery."""
        # Plain JSON, as a producer outside the platform sends it.
        topic = self._topics.raw_events
        for sample in samples:
            event_time = datetime.now(UTC)
            self._event_times.append((event_time.timestamp(), sample.index))
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
            model_name=MODEL_NAME,
            trigger=events_pb2.TRAIN_TRIGGER_INITIAL,
            spec=demo_spec(run_started),
            requested_by="demo",
        )
        request.requested_at.GetCurrentTime()
        await publish(
            self._producer, [encode(self._topics.train_requests, request, source="/demo", key=MODEL_NAME)]
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
        request = oip.ModelReadyRequest(name=MODEL_NAME, version=str(version))
        while time.monotonic() < deadline:
            with contextlib.suppress(PlatformError):
                response = await self._serving.ModelReady(request, metadata=self._metadata, timeout=2)
                if response.ready:
                    return
            await asyncio.sleep(0.1)
        raise DemoFailed(f"serving did not load version {version} within {within:.0f}s")

    async def _predict(self, sample: Sample) -> tuple[str, int]:
        request = oip.ModelInferRequest(model_name=MODEL_NAME, id=sample.event_id)
        tensor = request.inputs.add(name="features", datatype="FP64", shape=[1, len(FEATURES)])
        tensor.contents.fp64_contents.extend(float(v) for v in sample.features)
        request.outputs.add(name="label")
        response = await self._serving.ModelInfer(request, metadata=self._metadata, timeout=5)
        label = response.outputs[0].contents.bytes_contents[0].decode()
        return label, int(response.model_version)

    async def _traffic(self, stream: DriftingStream, registry: RegistryClient) -> None:
        config, report, watcher = self._config, self.report, self._watcher
        report.drift_onset_sample = stream.drift_at
        before, after_old, after_new = Accuracy(), Accuracy(), Accuracy()
        old_version = report.first_version
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
                if not sample.drifted:
                    before.add(label, sample.label)
                elif version == old_version:
                    after_old.add(label, sample.label)
                else:
                    if swap_time is None:
                        swap_time = time.monotonic()
                        report.new_version = version
                        self._say(f"serving answers with version {version}: swapped in while traffic ran")
                    after_new.add(label, sample.label)
            await self._send_events(answered)
            if len(self._pending_sends) >= 1000:
                await self._flush_events()
            if samples[0].drifted and onset_time is None:
                onset_time = time.monotonic()
                self._say(f"concept drift starts at sample {stream.drift_at}")
            self._progress_bar.update(task, advance=len(samples))
            if watcher.drift_events and report.drift_detected_at_sample < 0:
                drift, _seen = watcher.drift_events[0]
                report.drift_detected_at_sample = samples[-1].index
                report.detection_delay_samples = drift.window_size
                report.onset_error_samples = self._samples_between(
                    stream.drift_at, drift.onset_time.ToDatetime(UTC)
                )
                report.monitor_detector = drift.detector
                report.seconds_drift_to_detection = round(
                    time.monotonic() - (onset_time or time.monotonic()), 2
                )
                self._say(
                    f"monitor detected drift ({drift.detector}, error rate {drift.statistic:.2f}) "
                    f"{report.detection_delay_samples} samples after the change, which it located "
                    f"{abs(report.onset_error_samples)} samples {'after' if report.onset_error_samples >= 0 else 'before'} "
                    "the true onset"
                )
            if after_new.total >= config.post_swap_samples:
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
        report.accuracy_before_drift = round(before.value, 4)
        report.accuracy_after_drift_old_model = round(after_old.value, 4)
        report.accuracy_after_swap = round(after_new.value, 4)
        report.retrain_requests = len(watcher.retrain_requests)
        if watcher.retrain_requests:
            report.retrain_request_id = watcher.retrain_requests[0].request_id
        if swap_time is not None and onset_time is not None:
            report.seconds_drift_to_swap = round(swap_time - onset_time, 2)
        if report.new_version:
            registered = await registry.get_version(MODEL_NAME, report.new_version)
            report.new_holdout_accuracy = round(registered.metrics.get("accuracy", float("nan")), 4)
            report.new_version_gates = {gate.name: gate.passed for gate in registered.gates}
        self._judge()

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

    def _samples_between(self, true_onset: int, located: datetime) -> int:
        """Samples sent between the true onset and the located one (negative when located early)."""
        times = [when for when, _ in self._event_times]
        located_at = bisect.bisect_left(times, located.timestamp())
        true_at = next(i for i, (_, index) in enumerate(self._event_times) if index >= true_onset)
        return located_at - true_at

    def _judge(self) -> None:
        report = self.report
        problems = []
        if report.drift_detected_at_sample < 0:
            problems.append("no drift detected")
        if report.retrain_requests != 1:
            problems.append(f"{report.retrain_requests} retrain requests, expected exactly 1")
        if not report.new_version or report.new_version == report.first_version:
            problems.append("no new version served")
        elif self._watcher.production_version != report.new_version:
            problems.append(
                f"production is version {self._watcher.production_version}, not {report.new_version}"
            )
        gain = report.accuracy_after_swap - report.accuracy_after_drift_old_model
        if not gain >= self._config.min_accuracy_gain:
            problems.append(
                f"accuracy after the swap {report.accuracy_after_swap} is not {self._config.min_accuracy_gain} "
                f"above the drifted old model's {report.accuracy_after_drift_old_model}"
            )
        if report.failed_requests:
            problems.append(f"{report.failed_requests} prediction requests failed")
        if report.verdict:
            problems.insert(0, report.verdict)
        report.loop_closed = not problems
        report.verdict = "the loop closed" if not problems else "; ".join(problems)


def summary_table(report: DemoReport) -> Table:
    table = Table(title=f"Closed loop: {report.verdict}", show_header=False)
    rows = [
        ("first version (holdout accuracy)", f"v{report.first_version} ({report.first_holdout_accuracy})"),
        ("live accuracy before drift", str(report.accuracy_before_drift)),
        ("live accuracy after drift, old model", str(report.accuracy_after_drift_old_model)),
        ("drift onset at sample", str(report.drift_onset_sample)),
        ("detection delay, samples after the change", str(report.detection_delay_samples)),
        ("change located, samples from the true onset", f"{report.onset_error_samples:+d}"),
        ("demo's sample count when the drift event arrived", str(report.drift_detected_at_sample)),
        ("retrain requests", f"{report.retrain_requests} ({report.retrain_request_id})"),
        ("new version (holdout accuracy)", f"v{report.new_version} ({report.new_holdout_accuracy})"),
        ("live accuracy after swap", str(report.accuracy_after_swap)),
        ("seconds from drift onset to detection", str(report.seconds_drift_to_detection)),
        ("seconds from drift onset to swap", str(report.seconds_drift_to_swap)),
        ("failed prediction requests", str(report.failed_requests)),
        ("total seconds", str(report.total_seconds)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def endpoints_of(stack: LocalStack) -> Endpoints:
    return Endpoints(
        kafka_bootstrap=stack.kafka_bootstrap,
        registry_address=stack.grpc_address("registry"),
        datasets_address=stack.grpc_address("ingest"),
        serving_address=stack.grpc_address("serving"),
        token=stack.admin_token,
        topic_prefix=stack.topic_prefix,
    )


def demo(
    report_path: Annotated[
        Path, typer.Option("--report", help="Where to write the figures as JSON.")
    ] = DEFAULT_WORKDIR / "demo-report.json",
    workdir: Annotated[
        Path, typer.Option(help="Where `mlops up` keeps its state; a stack running from here is used.")
    ] = DEFAULT_WORKDIR,
    rate: Annotated[float, typer.Option(help="Samples per second sent through the platform.")] = 400.0,
) -> None:
    """Run the closed loop: train, serve, drift, detect, retrain, swap, and report.

    Uses the stack `mlops up` is running (the new model then stays in production), or starts
    a stack of its own for the run and stops it afterwards. Exits 0 only if the loop closed:
    a new version in production that does clearly better than the drifted old one.
    """
    console = Console(stderr=True)
    config = DemoConfig(rate=rate)
    state = running_stack(workdir)
    if state is not None:
        endpoints = Endpoints(
            kafka_bootstrap=f"127.0.0.1:{state.ports.kafka}",
            registry_address=f"127.0.0.1:{state.ports.registry_grpc}",
            datasets_address=f"127.0.0.1:{state.ports.ingest_grpc}",
            serving_address=f"127.0.0.1:{state.ports.serving_grpc}",
            token=state.token,
            topic_prefix=state.topic_prefix,
        )
        console.log(f"using the local stack running since {state.started_at} (pid {state.pid})")
        if "console" in state.services:
            console.log(f"watch it in the console: http://127.0.0.1:{state.ports.console_http}")
        report = _run(endpoints, config, console)
    else:
        defaults = StackPorts.defaults()
        ports = defaults if not any(port_open(p) for p in defaults.as_dict().values()) else StackPorts.free()
        with tempfile.TemporaryDirectory(prefix="mlops-demo-") as tmp:
            stack = LocalStack(Path(tmp), ports)
            console.log(
                "starting a local stack for the demo (broker, database, the services and the console)"
            )
            try:
                stack.start(timeout=90)
            except StackError as exc:
                console.print(f"[red]the local stack did not start:[/] {exc}")
                raise typer.Exit(3) from None
            console.log(f"watch it in the console: {stack.http_url('console')} (token: {stack.admin_token})")
            try:
                report = _run(endpoints_of(stack), config, console)
            finally:
                stack.stop()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.to_json() + "\n")
    console.print(summary_table(report))
    console.print(f"report written to {report_path}")
    if not report.loop_closed:
        raise typer.Exit(1)


def _run(endpoints: Endpoints, config: DemoConfig, console: Console) -> DemoReport:
    scenario = ClosedLoopDemo(endpoints, config, console)
    try:
        return asyncio.run(scenario.run())
    except (DemoFailed, PlatformError) as exc:
        scenario.report.verdict = str(exc)
        console.print(f"[red]demo failed:[/] {exc}")
        return scenario.report
