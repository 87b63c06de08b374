"""The monitor's stream processing: three stages over Kafka.

::

    predictions, labels,   route    <prefix>.monitor.join     join     <prefix>.monitor.samples   detect
    model events        ─────────▶  (by row id)          ─────────▶  (by model name)        ─────────▶ drift,
                        decode,      join table (by id),   expiry,    one detector per             train requests
                        dead-letter  dedupe                          model version

- *route* opens envelopes (dead-lettering what it cannot use) and re-keys every
  predicted row and label by the row id, so a row and its label meet in one partition
  whatever the producers keyed them by;
- *join* keeps a table of what arrived per id (backed by a changelog topic, so it
  survives restarts and moves between processes), passes on each prediction once and
  each (prediction, label) pair once, and expires entries after the join window;
- *detect* re-keys by model name, so one process holds all of a model's detectors and
  several monitor processes in one group split the models between them.

*join* and *detect* are faust agents with faust's tables (the join's, the episodes'):
faust assigns their partitions, recovers each table from its changelog before the stream
resumes, and moves state with partitions on a rebalance. Their topics carry batches (one
protobuf message per partition per batch, ``protos/mlops/v1/monitor.proto``), so faust's
cost per message is spread over hundreds of items. *route* reads the platform's topics,
one Kafka record per prediction or label, where faust's per-message path would cost more
than all of the monitor's own work (see docs/monitor.md, Benchmark): it is the platform's
:class:`~services.common.kafka.ConsumerLoop`, in a consumer group of its own
(``<group>-route``), committing a batch once its join batches are acknowledged.

Every agent runs with concurrency 1: faust's concurrent agents can commit an offset past a
message still being processed. Faust commits offsets only after flushing what the agents
produced (at-least-once), and the join's dedupe makes redelivery harmless.

Faust runs inside the service's own event loop (``await app.start()``) rather than as a
``faust worker``: one process, one loop, one set of signal handlers and logs, and tests
start it exactly as production does.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import Callable, Set
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer

from services.common import tracing
from services.common.events import Topics
from services.common.kafka import ConsumerLoop, create_producer, ensure_topics
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import cancel
from services.common.logging import get_logger
from services.common.progress import STALL_SECONDS, Progress
from services.common.proto.mlops.v1 import monitor_pb2
from services.monitor import internal, metrics
from services.monitor.alerts import WebhookAlerter
from services.monitor.changelog import JoinTable
from services.monitor.drift import Decision, Drift, DriftMonitor
from services.monitor.events import drift_alert, drift_record, retrain_alert, train_request_record
from services.monitor.faust_app import RawBytes, StatisticsOff
from services.monitor.join import ExpiryQueue, JoinEntry, JoinResult, add_label, add_prediction
from services.monitor.profiles import ProfileSource
from services.monitor.records import Prediction
from services.monitor.retrain import RetrainRequest
from services.monitor.route import Router
from services.monitor.settings import MonitorSettings
from services.monitor.stages import watch_stage_logs
from services.monitor.timeline import Timeline

log = get_logger(__name__)


class MonitorStreams:
    """Builds and runs the faust application around a :class:`DriftMonitor`.

    Parameters
    ----------
    settings
        The monitor's settings (topics, group, join window, timeouts).
    monitor
        The domain object that every joined sample goes to.
    clock
        Wall-clock time in epoch seconds (replaceable in tests).
    alerter
        Told about every drift event and retrain request, when a webhook is configured.
    profiles
        Where versions' training references come from (None: data drift is measured
        against each version's own earlier traffic).
    timeline
        Told about every drift event and retrain request published, for people to look back on.
    """

    def __init__(
        self,
        settings: MonitorSettings,
        monitor: DriftMonitor,
        clock: Callable[[], float] = time.time,
        alerter: WebhookAlerter | None = None,
        profiles: ProfileSource | None = None,
        timeline: Timeline | None = None,
    ):
        self.settings = settings
        self.monitor = monitor
        self._alerter = alerter
        self._timeline = timeline
        self._profiles = profiles
        self.topics = Topics(settings.topic_prefix)
        self.join_topic = f"{self.topics.prefix}.monitor.join"
        self.samples_topic = f"{self.topics.prefix}.monitor.samples"
        self._clock = clock
        self._expiry = ExpiryQueue()
        self._restored: set[str] = set()
        self._model_partitions: dict[str, int] = {}
        self._assigned: dict[str, list[int]] = {}
        """Partitions of the faust stages' topics this process owns (after the last rebalance)."""
        self._security = KafkaSecurity.from_settings(settings)
        self._starting: asyncio.Task[None] | None = None
        self._started_at = 0.0
        app = faust.App(
            settings.consumer_group(),
            monitor=StatisticsOff(),
            broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
            broker_credentials=self._security.faust_credentials(),
            autodiscover=False,
            web_enabled=False,
            store="memory://",
            # Tables live in memory and are rebuilt from their changelogs; faust creates its
            # data directory all the same, and it does not belong in the working directory.
            datadir=str(Path(tempfile.gettempdir()) / f"{settings.consumer_group()}-faust"),
            processing_guarantee="at_least_once",
            topic_partitions=settings.partitions,
            topic_replication_factor=1,
            table_standby_replicas=0,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval_seconds,
            broker_session_timeout=settings.session_timeout_seconds,
            broker_rebalance_timeout=settings.rebalance_timeout_seconds,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
            broker_request_timeout=max(30.0, settings.session_timeout_seconds),
            producer_acks=-1,
            # A few ms of linger turn a batch's dozen sends into one request: on a busy host
            # every request is a wake-up of the broker and a context switch away.
            producer_linger=0.005,
            # One record per producer batch. The embedded broker answers ListOffsets(latest)
            # with the last *batch*'s base offset + 1, so after a multi-record batch a
            # partition's end looks short, and faust's table recovery, which reads up to that
            # end, silently dropped the last writes of a moved partition. The monitor sends
            # few, large messages, so this costs next to nothing.
            producer_max_batch_size=1,
            producer_max_request_size=8 * 1024 * 1024,
            consumer_max_fetch_size=8 * 1024 * 1024,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.app = app
        raw: dict[str, Any] = {"schema": RawBytes()}
        self.source_topics = (
            self.topics.predictions,
            self.topics.labels,
            self.topics.model_events,
            self.topics.train_results,
        )
        """What the monitor consumes from the rest of the platform."""
        self._group = settings.consumer_group()
        self.route_group = f"{self._group}-route"
        """The route stage's consumer group (the platform's topics); faust's is ``group``."""
        self._join = app.topic(self.join_topic, partitions=settings.partitions, internal=True, **raw)
        self._samples = app.topic(self.samples_topic, partitions=settings.partitions, internal=True, **raw)
        # Values are protobuf (the join's) and JSON (faust's default, the episodes'): nothing
        # here is ever unpickled.
        self._pending = cast(
            JoinTable,
            app.tables.add(
                JoinTable(
                    app,
                    name="join",
                    partitions=settings.partitions,
                    on_recover=self._rebuild_expiry,
                    beacon=app.tables.beacon,
                )
            ),
        )
        self._episodes = app.Table("episodes", partitions=settings.partitions)
        app.agent(self._join, name="join")(self._join_rows)
        app.agent(self._samples, name="detect")(self._detect)
        app.timer(settings.sweep_interval_seconds, name="sweep")(self._send_ticks)
        app.on_partitions_assigned.connect(self._on_assigned)
        self._producer: AIOKafkaProducer | None = None
        self._route: ConsumerLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stages = Progress()
        """Whether the faust stages consume (the route's loop keeps its own)."""
        self._handled = 0
        """Messages the faust stages handled (a batch each), for their progress."""

    async def ensure_topics(self) -> None:
        """Create whichever of the monitor's topics the broker does not have: at start, and
        again when the consumer finds that the broker lost its records (the platform's topics
        come back with the stack; the monitor's own would not, and faust waits on them)."""
        settings, bootstrap = self.settings, self.settings.kafka_bootstrap_servers
        create = functools.partial(ensure_topics, bootstrap, security=self._security)
        consumed = self.source_topics
        await create(
            [*consumed, *(Topics.dlq(t) for t in consumed), self.topics.drift, self.topics.train_requests]
        )
        await create([self.join_topic, self.samples_topic], partitions=settings.partitions)
        changelogs = [
            self._pending.changelog_topic.get_topic_name(),
            self._episodes.changelog_topic.get_topic_name(),
        ]
        await create(changelogs, partitions=settings.partitions, configs={"cleanup.policy": "compact"})
        await create([f"{self.app.conf.id}-__assignor-__leader"], partitions=1)

    async def start(self) -> None:
        """Start in the background: faust returns only once the group has assigned this
        process its partitions and the tables are recovered, which after a killed member
        waits out that member's session (18 s on the embedded broker). The monitor's HTTP
        API answers meanwhile, and readiness counts the wait as a member without partitions
        (see :meth:`problem`)."""
        self._started_at = time.monotonic()
        self._starting = asyncio.create_task(self._start_stages(), name="monitor-streams-start")

    async def _start_stages(self) -> None:
        try:
            await self._start_stages_in_order()
        except Exception as exc:
            log.error("streams_start_failed", error=repr(exc))
            raise

    async def _start_stages_in_order(self) -> None:
        """Faust's stages, then the route (which feeds them)."""
        settings = self.settings
        # No linger: the route waits for a batch's acknowledgement before it takes the next,
        # so lingering would only add to every batch's time.
        self._producer = create_producer(
            settings.kafka_bootstrap_servers, "monitor-route", linger_ms=0, security=self._security
        )
        await self._producer.start()
        await self.app.start()
        router = Router(self.topics, self.join_topic, self.samples_topic, settings.partitions, self._producer)
        self._route = ConsumerLoop(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topics=self.source_topics,
            group_id=self.route_group,
            handler=router.handle,
            producer=self._producer,
            client_id="monitor",
            max_batch=settings.batch_size,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            security=self._security,
        )
        await self._route.start()
        watch = watch_stage_logs(
            self.app.consumer,
            {self.join_topic, self.samples_topic},
            self._group,
            self._stages,
            lambda: self._handled,
            self.ensure_topics,
        )
        self._watch = asyncio.create_task(watch, name="monitor-logs")

    async def stop(self) -> None:
        """Stop the route first (it commits what it handled), then faust, then the producer."""
        if self._starting is not None and not self._starting.done():
            await cancel(self._starting)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._route is not None:
            await self._route.stop()
        await self.app.stop()
        if self._producer is not None:
            await self._producer.stop()

    def problem(self) -> str | None:
        """Why the streams are not consuming (None while they are, or while they join their
        group for less than the stall time a member may go without partitions)."""
        starting = self._starting
        if starting is not None and not starting.done():
            waited = time.monotonic() - self._started_at
            return f"no partition assigned for {waited:.0f}s (starting)" if waited > STALL_SECONDS else None
        if starting is not None and not starting.cancelled() and starting.exception() is not None:
            return f"failed to start: {starting.exception()!r}"
        if not self.running:
            return "stopped"
        assert self._route is not None
        route = self._route.problem()
        if route is not None:
            return f"route: {route}"
        return self._stages.problem()

    @property
    def assignment(self) -> dict[str, list[int]]:
        """Partitions of the monitor's topics this process owns, by topic: the faust stages'
        after their last rebalance, and the route's."""
        route = self._route.assignment() if self._route is not None else frozenset()
        sources = {
            topic: sorted(tp.partition for tp in route if tp.topic == topic) for topic in self.source_topics
        }
        return {**self._assigned, **sources}

    @property
    def running(self) -> bool:
        faust_running = self.app.started and not self.app.should_stop and not self.app.crashed
        return bool(faust_running and self._route is not None and self._route.running)

    # --- join: one entry per row id, each pair passed on once ------------------------------

    async def _join_rows(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            # One span per message, which carries a batch of items: tracing costs nothing per item.
            with tracing.consume_span(self.join_topic, self._group, ()):
                await self._join_batch(event)
            self._handled += 1

    async def _join_batch(self, event: faust.types.EventT[bytes]) -> None:
        partition = event.message.partition
        now = self._clock()
        out = internal.Batches(self.settings.partitions)
        try:
            batch = monitor_pb2.JoinBatch.FromString(event.value)
            for message in batch.predictions:
                self._join_prediction(message, partition, now, out)
            for label in batch.labels:
                self._join_label(label, partition, now, out)
            self._expire(partition, now)
        except Exception:
            # Only the monitor writes this topic: a record it cannot read is a bug, not
            # hostile input. Log it and go on rather than stop the join.
            log.exception("join_failed", partition=partition, offset=event.message.offset)
        await self._pending.flush_changelog()
        for topic, to, value in out.messages(self.join_topic, self.samples_topic):
            await self.app.producer.send(topic, None, value, to, None, None)

    def _join_prediction(
        self, message: monitor_pb2.MonitoredPrediction, partition: int, now: float, out: internal.Batches
    ) -> None:
        prediction = internal.prediction(message, with_features=False)
        entry = self._pending.get(prediction.id)
        result = add_prediction(
            entry, prediction, deadline=now + self.settings.join_window_seconds, partition=partition
        )
        self._store(prediction.id, entry, result, "prediction", out)
        if not result.duplicate:
            # Seen for the first time: on to its model's data and prediction detectors, as it came.
            out.add_sample(prediction.model).prediction.CopyFrom(message)

    def _join_label(
        self, message: monitor_pb2.MonitoredLabel, partition: int, now: float, out: internal.Batches
    ) -> None:
        label = internal.label(message)
        entry = self._pending.get(label.id)
        result = add_label(
            entry, label, deadline=now + self.settings.join_window_seconds, partition=partition
        )
        self._store(label.id, entry, result, "label", out)

    def _store(
        self, key: str, before: JoinEntry | None, result: JoinResult, kind: str, out: internal.Batches
    ) -> None:
        if result.duplicate:
            metrics.DUPLICATES.labels(kind).inc()
            return
        self._pending[key] = result.entry
        if before is None:
            self._expiry.add(result.entry.partition, result.entry.expires_at, key)
            metrics.JOIN_PENDING.inc()
        for sample in result.joined:
            out.add_sample(sample.prediction.model).sample.CopyFrom(internal.sample_message(sample))
        for live, challenger in result.compared:
            comparison = out.add_sample(live.prediction.model).comparison
            comparison.live.CopyFrom(internal.sample_message(live))
            comparison.challenger.CopyFrom(internal.sample_message(challenger))

    def _expire(self, partition: int, now: float) -> None:
        for key in self._expiry.pop_due(partition, now):
            entry = self._pending.get(key)
            if entry is None or entry.expires_at > now:
                continue
            if entry.unmatched_predictions:
                metrics.JOIN_EXPIRED.labels("prediction").inc(entry.unmatched_predictions)
            if entry.unmatched_label:
                metrics.JOIN_EXPIRED.labels("label").inc()
            del self._pending[key]
            metrics.JOIN_PENDING.dec()

    async def _rebuild_expiry(self) -> None:
        """After the table is recovered from its changelog, index what it holds by deadline."""
        self._expiry = ExpiryQueue()
        for key, entry in self._pending.items():
            self._expiry.add(entry.partition, entry.expires_at, key)
        metrics.JOIN_PENDING.set(len(self._expiry))

    async def _send_ticks(self) -> None:
        """Wake every join partition so expiry runs even where no data arrives."""
        tick = monitor_pb2.JoinBatch().SerializeToString()
        for partition in range(self.settings.partitions):
            await self.app.producer.send(self.join_topic, None, tick, partition, None, None)

    # --- detect: one process per model, detectors in memory --------------------------------

    async def _detect(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            with tracing.consume_span(self.samples_topic, self._group, ()):
                await self._detect_batch(event)
            self._handled += 1

    async def _detect_batch(self, event: faust.types.EventT[bytes]) -> None:
        partition = event.message.partition
        now = self._clock()
        tally = metrics.Tally()
        # A batch's predictions go to the detectors together (see DriftMonitor.observe_many):
        # after the labelled samples among them, which feed other detectors (the join puts
        # each prediction's sample next to it, so waiting for the next sample would leave runs
        # of one), and before a version going live or a retrain's outcome, which change what
        # the detectors and the drift episode are.
        predictions: list[Prediction] = []
        try:
            for item in monitor_pb2.SampleBatch.FromString(event.value).items:
                kind = item.WhichOneof("item")
                if kind == "prediction":
                    predictions.append(internal.prediction(item.prediction))
                    continue
                if kind in ("live_version", "retrain_outcome"):
                    await self._observe(predictions, partition, now, tally)
                    predictions = []
                await self._detect_one(item, partition, now, tally)
            await self._observe(predictions, partition, now, tally)
        except Exception:
            log.exception("detect_failed", partition=partition, offset=event.message.offset)
        tally.export(self.monitor, self._clock())

    async def _observe(
        self, predictions: list[Prediction], partition: int, now: float, tally: metrics.Tally
    ) -> None:
        versions = dict.fromkeys((p.model, p.version) for p in predictions)
        for model, version in versions:
            self._restore(model, partition)
            await self._reference(model, version, now)
            tally.models.add(model)
        tally.predictions.update((p.model, p.version) for p in predictions)
        if predictions:
            await self._publish(self.monitor.observe_many(predictions, now))

    async def _detect_one(
        self, item: monitor_pb2.SampleItem, partition: int, now: float, tally: metrics.Tally
    ) -> None:
        """Any item but a prediction (see :meth:`_observe`)."""
        kind = item.WhichOneof("item")
        if kind == "sample":
            sample = internal.sample(item.sample)
            self._restore(sample.prediction.model, partition)
            await self._publish(self.monitor.observe_labelled(sample, now))
            tally.labelled[sample.prediction.model, sample.prediction.version] += 1
            tally.label_lags.setdefault(sample.prediction.model, []).append(sample.label_lag)
            tally.models.add(sample.prediction.model)
        elif kind == "comparison":
            live, challenger = (
                internal.sample(item.comparison.live),
                internal.sample(item.comparison.challenger),
            )
            self._restore(live.prediction.model, partition)
            self.monitor.compare(live, challenger)
            metrics.export_comparison(self.monitor, live, challenger)
        elif kind == "live_version":
            model, version = item.live_version.model, item.live_version.version
            self._restore(model, partition)
            await self._reference(model, version, now)
            self.monitor.version_live(model, version)
            self._save(model)
            tally.models.add(model)
        elif kind == "retrain_outcome":
            outcome = item.retrain_outcome
            self._restore(outcome.model, partition)
            self.monitor.retrain.on_result(
                outcome.model, outcome.idempotency_key, outcome.outcome, outcome.detail
            )
            self._save(outcome.model)
            tally.models.add(outcome.model)

    async def _reference(self, model: str, version: int, now: float) -> None:
        """Ask for the version's training reference before its detectors see live values."""
        if self._profiles is None or not self.monitor.reference_due(model, version, now):
            return
        lookup = await self._profiles.lookup(model, version, now)
        self.monitor.use_reference(model, version, lookup)
        metrics.REFERENCE_LOOKUPS.labels(lookup.status).inc()
        metrics.TRAINING_REFERENCE.labels(model, str(version)).set(1.0 if lookup.seeded else 0.0)
        log.info(
            "training_reference",
            model=model,
            version=version,
            status=lookup.status,
            features=len(lookup.samples),
            detail=lookup.detail,
        )

    async def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """After a rebalance, let go of what moved to another process: its join entries'
        expiry and its models' detectors (the new owner takes over the episode state)."""
        assigned: Set[Any] = args[0]
        mine = {(tp.topic, tp.partition) for tp in assigned}
        self._assigned = {
            topic: sorted(p for t, p in mine if t == topic) for topic in (self.join_topic, self.samples_topic)
        }
        for partition in range(self.settings.partitions):
            if (self.join_topic, partition) not in mine:
                self._expiry.forget(partition)
        for model, partition in list(self._model_partitions.items()):
            if (self.samples_topic, partition) not in mine:
                del self._model_partitions[model]
                self._restored.discard(model)
                self.monitor.forget(model)
                metrics.export_hold(model, None)

    def _restore(self, model: str, partition: int) -> None:
        """Take over a model's drift episode and cooldown from whoever held it before."""
        if model in self._restored:
            return
        self._restored.add(model)
        self._model_partitions[model] = partition
        state = self._episodes.get(model)
        if state is not None:
            self.monitor.retrain.restore(model, state)

    def _save(self, model: str) -> None:
        self._episodes[model] = self.monitor.retrain.export(model)

    async def _publish(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Drift):
                out = drift_record(self.topics.drift, decision)
                alert = drift_alert(decision)
                metrics.DRIFTS.labels(
                    decision.model, str(decision.version), decision.kind, decision.detector, decision.feature
                ).inc()
                log.info(
                    "drift_detected",
                    model=decision.model,
                    version=decision.version,
                    kind=decision.kind,
                    detector=decision.detector,
                    feature=decision.feature,
                    sample_index=decision.change.sample_index,
                    statistic=round(decision.change.statistic, 4),
                )
            elif isinstance(decision, RetrainRequest):
                out = train_request_record(self.topics.train_requests, decision)
                alert = retrain_alert(decision)
                metrics.RETRAINS.labels(decision.model).inc()
                log.info(
                    "retrain_requested",
                    model=decision.model,
                    parent_version=decision.parent_version,
                    idempotency_key=decision.idempotency_key,
                )
            await self.app.producer.send(out.topic, out.key, out.value, None, None, list(out.headers))
            self._save(decision.model)
            if self._alerter is not None:
                self._alerter.offer(alert)
            if self._timeline is not None:
                self._timeline.record(decision)
