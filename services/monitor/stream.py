"""The monitor's stream processing: a faust application of three agents.

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

Between the stages items travel in batches, one JSON message per partition per batch (see
:class:`_Batches`): faust's cost is per message, and per item it would dominate.

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
from collections import Counter
from collections.abc import Callable, Set
from pathlib import Path
from typing import Any, cast

import faust

from services.common import tracing
from services.common.events import EnvelopeError, IncomingRecord, Topics
from services.common.kafka import DeadLetter, ensure_topics
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import cancel
from services.common.logging import get_logger
from services.common.progress import STALL_SECONDS
from services.monitor import metrics
from services.monitor.alerts import WebhookAlerter
from services.monitor.changelog import BatchedChangelogTable
from services.monitor.drift import Decision, Drift, DriftMonitor
from services.monitor.events import (
    drift_alert,
    drift_record,
    label_from,
    live_version_from,
    predictions_from,
    retrain_alert,
    train_outcome_from,
    train_request_record,
)
from services.monitor.faust_app import RawBytes, StatisticsOff, StreamApp, incoming
from services.monitor.join import ExpiryQueue, JoinEntry, JoinResult, add_label, add_prediction, partition_of
from services.monitor.profiles import ProfileSource
from services.monitor.records import InvalidRecord, Label, LabelledSample, Prediction, dumps, loads
from services.monitor.retrain import RetrainRequest
from services.monitor.settings import MonitorSettings
from services.monitor.timeline import Timeline

log = get_logger(__name__)

# Messages on the monitor's internal topics are JSON batches: {"j": [item, ...]} on the
# join topic, {"s": [item, ...]} on the samples topic; each item says what it is in "k".
JOIN_ITEMS = "j"
SAMPLE_ITEMS = "s"
PREDICTED = "p"
LABEL = "l"
OBSERVED = "o"
SAMPLE = "s"
COMPARED = "c"
LIVE = "live"
TRAINED = "t"


class _Batches:
    """Items bound for the monitor's internal topics, grouped by the partition they belong to."""

    def __init__(self, partitions: int):
        self._partitions = partitions
        self.join: dict[int, list[dict[str, Any]]] = {}
        self.samples: dict[int, list[dict[str, Any]]] = {}

    def add_join(self, row_id: str, item: dict[str, Any]) -> None:
        self.join.setdefault(partition_of(row_id, self._partitions), []).append(item)

    def add_sample(self, model: str, item: dict[str, Any]) -> None:
        self.samples.setdefault(partition_of(model, self._partitions), []).append(item)

    async def flush(self, app: faust.App, join_topic: str, samples_topic: str) -> None:
        """One message per partition and topic; faust flushes them before committing."""
        for topic, field, batches in (
            (join_topic, JOIN_ITEMS, self.join),
            (samples_topic, SAMPLE_ITEMS, self.samples),
        ):
            for partition, items in batches.items():
                await app.producer.send(topic, None, dumps({field: items}), partition, None, None)
            batches.clear()


class _Tally:
    """What one batch of the detect stage adds to the per-version metrics, exported once
    per batch: finding a metric's child for its labels costs 2 us, four times what counting
    does, and per sample there were four of them."""

    def __init__(self) -> None:
        self.predictions: Counter[tuple[str, int]] = Counter()
        self.labelled: Counter[tuple[str, int]] = Counter()
        self.label_lags: dict[str, list[float]] = {}
        self.models: set[str] = set()
        """Models the batch touched: their retrain holds are exported again."""


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
        self.assignment: dict[str, list[int]] = {}
        """Partitions of the monitor's topics this process owns, by topic (after the last rebalance)."""
        self._security = KafkaSecurity.from_settings(settings)
        self._starting: asyncio.Task[None] | None = None
        self._started_at = 0.0
        app = StreamApp(
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
        app.fetch_max_wait_ms = settings.fetch_max_wait_ms
        app.on_log_lost = self.ensure_topics
        self.app = app
        raw: dict[str, Any] = {"schema": RawBytes()}
        self.source_topics = (
            self.topics.predictions,
            self.topics.labels,
            self.topics.model_events,
            self.topics.train_results,
        )
        """What the monitor consumes from the rest of the platform."""
        self._source_names = ",".join(sorted(self.source_topics))
        self._group = settings.consumer_group()
        self._sources = app.topic(*self.source_topics, **raw)
        self._join = app.topic(self.join_topic, partitions=settings.partitions, internal=True, **raw)
        self._samples = app.topic(self.samples_topic, partitions=settings.partitions, internal=True, **raw)
        # Values are JSON (faust's default for tables): nothing here is ever unpickled.
        self._pending = cast(
            BatchedChangelogTable,
            app.tables.add(
                BatchedChangelogTable(
                    app,
                    name="join",
                    partitions=settings.partitions,
                    on_recover=self._rebuild_expiry,
                    beacon=app.tables.beacon,
                )
            ),
        )
        self._episodes = app.Table("episodes", partitions=settings.partitions)
        app.agent(self._sources, name="route")(self._route)
        app.agent(self._join, name="join")(self._join_rows)
        app.agent(self._samples, name="detect")(self._detect)
        app.timer(settings.sweep_interval_seconds, name="sweep")(self._send_ticks)
        app.on_partitions_assigned.connect(self._on_assigned)

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
        """Start faust in the background: it returns only once the group has assigned this
        process its partitions and the tables are recovered, which after a killed member
        waits out that member's session (18 s on the embedded broker). The monitor's HTTP
        API answers meanwhile, and readiness counts the wait as a member without partitions
        (see :func:`problem`)."""
        self._started_at = time.monotonic()
        self._starting = asyncio.create_task(self._start_app(), name="monitor-streams-start")

    async def _start_app(self) -> None:
        try:
            await self.app.start()
        except Exception as exc:
            log.error("streams_start_failed", error=repr(exc))
            raise

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            await cancel(self._starting)
        await self.app.stop()

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
        progress = cast(Any, self.app.consumer).progress
        return progress.problem() if progress is not None else None

    @property
    def running(self) -> bool:
        return bool(self.app.started and not self.app.should_stop and not self.app.crashed)

    # --- route: envelopes in, rows and labels out, batched by join partition ---------------

    async def _route(self, stream: faust.StreamT[bytes]) -> None:
        # take_events acks a batch only once the loop body is done with it.
        batches = cast(faust.Stream[bytes], stream).take_events(
            self.settings.batch_size, within=self.settings.batch_seconds
        )
        async for events in batches:
            records = [incoming(event) for event in events]
            with tracing.consume_span(self._source_names, self._group, [r.headers for r in records]):
                await self._route_batch(records)

    async def _route_batch(self, records: list[IncomingRecord]) -> None:
        out = _Batches(self.settings.partitions)
        for record in records:
            try:
                self._route_one(record, out)
            except (EnvelopeError, InvalidRecord) as exc:
                error_class = exc.error_class if isinstance(exc, EnvelopeError) else "invalid"
                field = exc.field if isinstance(exc, InvalidRecord) else ""
                await self._dead_letter(DeadLetter(record, error_class, str(exc), field))
            except Exception as exc:
                log.exception("route_failed", topic=record.topic, offset=record.offset)
                await self._dead_letter(
                    DeadLetter(record, "processing_error", f"{type(exc).__name__}: {exc}")
                )
        await out.flush(self.app, self.join_topic, self.samples_topic)

    def _route_one(self, record: IncomingRecord, out: _Batches) -> None:
        if record.topic == self.topics.predictions:
            for prediction in predictions_from(record):
                out.add_join(prediction.id, {"k": PREDICTED, **prediction.to_json()})
        elif record.topic == self.topics.labels:
            label = label_from(record)
            out.add_join(label.id, {"k": LABEL, **label.to_json()})
        elif record.topic == self.topics.train_results:
            trained = train_outcome_from(record)
            if trained is not None:
                out.add_sample(
                    trained.model,
                    {
                        "k": TRAINED,
                        "m": trained.model,
                        "key": trained.key,
                        "o": trained.outcome,
                        "d": trained.detail,
                    },
                )
        else:
            live = live_version_from(record)
            if live is not None:
                model, version = live
                out.add_sample(model, {"k": LIVE, "m": model, "v": version})

    async def _dead_letter(self, dead: DeadLetter) -> None:
        out = dead.to_outgoing()
        await self.app.producer.send(out.topic, out.key, out.value, None, None, list(out.headers))
        dead.sent()

    # --- join: one entry per row id, each pair passed on once ------------------------------

    async def _join_rows(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            # One span per message, which carries a batch of items: tracing costs nothing per item.
            with tracing.consume_span(self.join_topic, self._group, ()):
                await self._join_batch(event)

    async def _join_batch(self, event: faust.types.EventT[bytes]) -> None:
        partition = event.message.partition
        now = self._clock()
        out = _Batches(self.settings.partitions)
        try:
            for item in loads(event.value)[JOIN_ITEMS]:
                kind = item["k"]
                if kind == PREDICTED:
                    self._join_prediction(Prediction.from_json(item), partition, now, out)
                elif kind == LABEL:
                    self._join_label(Label.from_json(item), partition, now, out)
            self._expire(partition, now)
        except Exception:
            # Only the monitor writes this topic: a record it cannot read is a bug, not
            # hostile input. Log it and go on rather than stop the join.
            log.exception("join_failed", partition=partition, offset=event.message.offset)
        await self._pending.flush_changelog()
        await out.flush(self.app, self.join_topic, self.samples_topic)

    def _join_prediction(self, prediction: Prediction, partition: int, now: float, out: _Batches) -> None:
        entry = self._entry(prediction.id)
        result = add_prediction(
            entry, prediction, deadline=now + self.settings.join_window_seconds, partition=partition
        )
        self._store(prediction.id, entry, result, "prediction", out)
        if not result.duplicate:
            out.add_sample(prediction.model, {"k": OBSERVED, **prediction.to_json()})

    def _join_label(self, label: Label, partition: int, now: float, out: _Batches) -> None:
        entry = self._entry(label.id)
        result = add_label(
            entry, label, deadline=now + self.settings.join_window_seconds, partition=partition
        )
        self._store(label.id, entry, result, "label", out)

    def _entry(self, key: str) -> JoinEntry | None:
        stored = self._pending.get(key)
        return JoinEntry.from_json(stored) if stored is not None else None

    def _store(
        self, key: str, before: JoinEntry | None, result: JoinResult, kind: str, out: _Batches
    ) -> None:
        if result.duplicate:
            metrics.DUPLICATES.labels(kind).inc()
            return
        self._pending[key] = result.entry.to_json()
        if before is None:
            self._expiry.add(result.entry.partition, result.entry.expires_at, key)
            metrics.JOIN_PENDING.inc()
        for sample in result.joined:
            out.add_sample(sample.prediction.model, {"k": SAMPLE, **sample.to_json()})
        for live, challenger in result.compared:
            out.add_sample(
                live.prediction.model, {"k": COMPARED, "a": live.to_json(), "b": challenger.to_json()}
            )

    def _expire(self, partition: int, now: float) -> None:
        for key in self._expiry.pop_due(partition, now):
            entry = self._entry(key)
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
        for key, stored in self._pending.items():
            self._expiry.add(int(stored["pt"]), float(stored["e"]), key)
        metrics.JOIN_PENDING.set(len(self._expiry))

    async def _send_ticks(self) -> None:
        """Wake every join partition so expiry runs even where no data arrives."""
        tick = dumps({JOIN_ITEMS: []})
        for partition in range(self.settings.partitions):
            await self.app.producer.send(self.join_topic, None, tick, partition, None, None)

    # --- detect: one process per model, detectors in memory --------------------------------

    async def _detect(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            with tracing.consume_span(self.samples_topic, self._group, ()):
                await self._detect_batch(event)

    async def _detect_batch(self, event: faust.types.EventT[bytes]) -> None:
        partition = event.message.partition
        now = self._clock()
        tally = _Tally()
        try:
            for item in loads(event.value)[SAMPLE_ITEMS]:
                await self._detect_one(item, partition, now, tally)
        except Exception:
            log.exception("detect_failed", partition=partition, offset=event.message.offset)
        self._export_quality(tally)

    async def _detect_one(self, data: dict[str, Any], partition: int, now: float, tally: _Tally) -> None:
        kind = data["k"]
        if kind == OBSERVED:
            prediction = Prediction.from_json(data)
            self._restore(prediction.model, partition)
            await self._reference(prediction.model, prediction.version, now)
            await self._publish(self.monitor.observe(prediction, now))
            tally.predictions[prediction.model, prediction.version] += 1
            tally.models.add(prediction.model)
        elif kind == SAMPLE:
            sample = LabelledSample.from_json(data)
            self._restore(sample.prediction.model, partition)
            await self._publish(self.monitor.observe_labelled(sample, now))
            tally.labelled[sample.prediction.model, sample.prediction.version] += 1
            tally.label_lags.setdefault(sample.prediction.model, []).append(sample.label_lag)
            tally.models.add(sample.prediction.model)
        elif kind == COMPARED:
            live, challenger = LabelledSample.from_json(data["a"]), LabelledSample.from_json(data["b"])
            self._restore(live.prediction.model, partition)
            self.monitor.compare(live, challenger)
            self._export_comparison(live, challenger)
        elif kind == LIVE:
            model, version = str(data["m"]), int(data["v"])
            self._restore(model, partition)
            await self._reference(model, version, now)
            self.monitor.version_live(model, version)
            self._save(model)
            tally.models.add(model)
        elif kind == TRAINED:
            model = str(data["m"])
            self._restore(model, partition)
            self.monitor.retrain.on_result(model, str(data["key"]), str(data["o"]), str(data["d"]))
            self._save(model)
            tally.models.add(model)

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
        self.assignment = {
            topic: sorted(p for t, p in mine if t == topic)
            for topic in (self.join_topic, self.samples_topic, *self.source_topics)
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

    def _export_quality(self, tally: _Tally) -> None:
        now = self._clock()
        for model in tally.models:
            metrics.export_hold(model, self.monitor.retrain.hold(model, now))
        for (model, version), count in tally.predictions.items():
            metrics.PREDICTIONS.labels(model, str(version)).inc(count)
        for model, lags in tally.label_lags.items():
            histogram = metrics.LABEL_LAG.labels(model)
            for lag in lags:
                histogram.observe(lag)
        for (model, version), count in tally.labelled.items():
            metrics.LABELLED.labels(model, str(version)).inc(count)
            quality = self.monitor.quality(model, version)
            if quality is None:
                continue
            if quality.accuracy is not None:
                metrics.ACCURACY.labels(model, str(version)).set(quality.accuracy)
            elif quality.rolling_error.value is not None:
                metrics.MEAN_ABSOLUTE_ERROR.labels(model, str(version)).set(quality.rolling_error.value)

    def _export_comparison(self, live: LabelledSample, challenger: LabelledSample) -> None:
        model = live.prediction.model
        for entry in self.monitor.shadow_comparison(model):
            if (
                entry["version"] == challenger.prediction.version
                and entry["against"] == live.prediction.version
            ):
                labels = (model, str(entry["version"]), str(entry["against"]))
                if "accuracy" in entry:
                    metrics.SHADOW_ACCURACY.labels(*labels).set(entry["accuracy"])
                    metrics.SHADOW_LIVE_ACCURACY.labels(*labels).set(entry["live_accuracy"])
