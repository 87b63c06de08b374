"""Online learning: production river models keep learning from the feature topic, and a
snapshot is registered as a new version every ``online_snapshot_rows`` rows.

Why no consumer group: a group would split ``<prefix>.features`` between the trainer
processes, and each would learn a part of the stream. Instead each online model is
leased to one trainer (in the trainer's MongoDB collection, like jobs), which reads
every partition itself. Its position is not a committed offset but the model's own
state in the registry: a snapshot records, per partition, the next offset it has not
learned (``online.positions``), and whoever loads it (after a restart, or taking over
the lease) resumes exactly there. A batch-trained version has no positions: learning
starts at records published around the end of its training window, and only rows newer
than that window are learned. Nothing is learned twice; what was learned since the
last snapshot is relearned by whoever resumes, because nothing was committed.

Rows learned are the ones that carried their label when ingested; labels that arrive
later reach the model through the next batch retrain. Snapshots are gated by the
spec's ``min_metric`` on their progressive-validation score.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.aliases import PRODUCTION
from services.common.artifacts import ArtifactError
from services.common.clients.registry import RegistryClient
from services.common.events import EnvelopeError, IncomingRecord, decode
from services.common.flavors import flavor
from services.common.flavors.base import SIGNATURE_HMAC_PARAM, StoredArtifact
from services.common.flavors.river import RiverFlavor, RiverRuntime
from services.common.kafka import TailReader
from services.common.kafka_security import PLAINTEXT, KafkaSecurity
from services.common.logging import get_logger
from services.common.progress import Resume
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.registry_pb2 import (
    ModelVersion,
    SearchModelVersionsRequest,
    VersionMetadata,
)
from services.trainer import metrics
from services.trainer.errors import SpecError
from services.trainer.gates import metric_floor
from services.trainer.job_store import JobStore
from services.trainer.registration import package_versions
from services.trainer.river_models import OnlineSession, RiverEstimator
from services.trainer.scoring import DEFAULT_METRIC, METRICS
from services.trainer.tabular import Feature, FeatureKind

log = get_logger(__name__)

# Records are stamped when ingest publishes them, which is after the event happened;
# rewinding this much further covers publishers whose clocks run a little ahead.
REWIND_MARGIN_MS = 60_000
POSITIONS_PARAM = "online.positions"
"""Per partition, the next feature-topic offset an online snapshot has not learned yet."""


@dataclass(frozen=True)
class OnlineConfig:
    snapshot_rows: int
    refresh_seconds: float
    code_version: str
    signing_key: bytes


class OnlineLearner:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        features_topic: str,
        registry: RegistryClient,
        store: JobStore,
        config: OnlineConfig,
        security: KafkaSecurity = PLAINTEXT,
    ):
        self._registry = registry
        self._store = store
        self._config = config
        self._reader = TailReader(
            bootstrap_servers,
            [features_topic],
            client_id="mlops-trainer-online",
            fetch_max_wait_ms=200,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # Rows published since the broker lost its log were never learned.
            resume=Resume.BEGINNING,
            security=security,
        )
        self.sessions: dict[str, OnlineSession] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()
        self._task = asyncio.create_task(self._run(), name="online-learner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for name in list(self.sessions):
            with contextlib.suppress(Exception):
                await self._store.release_lease(self._lease_name(name), self._store.owner)
        await self._reader.stop()

    @staticmethod
    def _lease_name(model_name: str) -> str:
        return f"online:{model_name}"

    async def _run(self) -> None:
        next_refresh = 0.0
        while True:
            if time.monotonic() >= next_refresh:
                try:
                    await self._refresh()
                except Exception as exc:  # the registry or database blinked: try again next time
                    log.warning("online_refresh_failed", error=repr(exc))
                next_refresh = time.monotonic() + self._config.refresh_seconds
            records = await self._reader.read(timeout_ms=500, max_records=2000)
            self._forget_lost_positions()
            if records and self.sessions:
                await self._learn(records)

    def problem(self) -> str | None:
        """Why the feature stream is not being read (None while it is)."""
        if self._task is None or self._task.done():
            return "not reading"
        return self._reader.problem()

    def _forget_lost_positions(self) -> None:
        """A session's position past the log's end (kept in memory, or read from a snapshot
        made before the broker lost its records) would skip every row until the new log grew
        past it: the rows there now were never learned, so learning restarts at 0."""
        for tp in self._reader.assignment:
            end = self._reader.end(tp)
            if end is None:
                continue
            for session in self.sessions.values():
                if session.positions.get(tp.partition, 0) > end:
                    log.warning(
                        "online_position_past_log_end",
                        model=session.model_name,
                        partition=tp.partition,
                        position=session.positions[tp.partition],
                        log_end=end,
                    )
                    session.positions[tp.partition] = 0

    async def _refresh(self) -> None:
        """Follow the production river versions: take the leases, load what changed, drop the rest."""
        versions = await self._registry.search_versions(SearchModelVersionsRequest(alias=PRODUCTION))
        production = {v.model_name: v for v in versions if v.artifact.format == RiverFlavor.name}
        for name in [n for n in self.sessions if n not in production]:
            await self._drop(name, "no longer a river model in production")
        for name, version in production.items():
            lease = self._lease_name(name)
            session = self.sessions.get(name)
            if session is not None:
                if not await self._store.renew_lease(lease, self._store.owner):
                    await self._drop(name, "lease lost")
                    continue
                if version.version in session.versions:
                    continue  # ours, or the parent of a snapshot the gates kept out of production
            elif await self._store.lease(lease, self._store.owner):
                continue  # another trainer learns this one
            await self._load(version)

    async def _drop(self, name: str, why: str) -> None:
        self.sessions.pop(name, None)
        await self._store.release_lease(self._lease_name(name), self._store.owner)
        log.info("online_model_dropped", model=name, reason=why)

    async def _load(self, version: ModelVersion) -> None:
        try:
            session = await self._session(version)
        except (ArtifactError, SpecError, ValueError) as exc:
            log.warning(
                "online_model_unusable", model=version.model_name, version=version.version, error=str(exc)
            )
            await self._drop(version.model_name, str(exc))
            return
        self.sessions[version.model_name] = session
        for tp in self._reader.assignment:
            if session.positions[tp.partition] < await self._reader.position(tp):
                self._reader.seek(tp, session.positions[tp.partition])
        log.info("online_model_loaded", model=version.model_name, version=version.version)

    async def _session(self, version: ModelVersion) -> OnlineSession:
        _, data = await self._registry.download_artifact(version.model_name, version.version)
        runtime = flavor(RiverFlavor.name).load(
            StoredArtifact.of(version, data), signing_key=self._config.signing_key
        )
        assert isinstance(runtime, RiverRuntime)
        features = [
            Feature(name, FeatureKind.CATEGORICAL if name in runtime.categorical else FeatureKind.NUMERIC)
            for name in version.signature.feature_names
        ]
        estimator = RiverEstimator.fitted(
            runtime.model,
            version.params.get("family", ""),
            version.signature.task,
            features,
            list(version.signature.classes),
        )
        end_ns = version.lineage.data.window.end_time.ToNanoseconds()
        by_time = {
            tp.partition: offset
            for tp, offset in (await self._reader.offsets_at(end_ns // 1_000_000 - REWIND_MARGIN_MS)).items()
        }
        stored = {int(p): int(o) for p, o in json.loads(version.params.get(POSITIONS_PARAM, "{}")).items()}
        return OnlineSession(
            model_name=version.model_name,
            version=version.version,
            dataset=version.spec.dataset or version.lineage.data.window.dataset,
            estimator=estimator,
            # A snapshot says where it stopped; a batch-trained version only how recent its data is.
            positions={p: stored.get(p, offset) for p, offset in by_time.items()} if stored else by_time,
            floor_ns=0 if stored else end_ns,
        )

    async def _learn(self, records: Sequence[IncomingRecord]) -> None:
        rows: list[tuple[FeatureRow, int, int]] = []
        for record in records:
            try:
                rows.append((decode(record, FeatureRow).message, record.partition, record.offset))
            except EnvelopeError:
                metrics.ONLINE_ROWS.labels("undecodable").inc()
        sessions = list(self.sessions.values())
        learned = await asyncio.to_thread(_offer_all, sessions, rows)
        metrics.ONLINE_ROWS.labels("learned").inc(learned)
        for session in sessions:
            if session.learned >= self._config.snapshot_rows and session.model_name in self.sessions:
                await self._snapshot(session)

    async def _snapshot(self, session: OnlineSession) -> None:
        """Register what the session learned as a new version; the registry's policy promotes it."""
        parent = await self._registry.get_version(session.model_name, session.version)
        scores = {k: v for k, v in session.scores().items() if v == v}
        metric_name = parent.params.get("metric") or DEFAULT_METRIC[parent.signature.task]
        metric = METRICS.get(metric_name)
        gates = []
        if parent.spec.gates.min_metric and metric is not None and metric_name in scores:
            gates.append(metric_floor(metric, scores[metric_name], parent.spec.gates.min_metric))
        saved = flavor(RiverFlavor.name).save(session.estimator, signing_key=self._config.signing_key)
        described = VersionMetadata(
            model_name=session.model_name,
            metrics=scores | {"online.rows": float(session.learned)},
            params=dict(parent.params)
            | {SIGNATURE_HMAC_PARAM: saved.signature_hmac, "online.parent": str(parent.version)},
            signature_hmac=saved.signature_hmac,
            gates=gates,
            gates_passed=all(g.passed for g in gates),
            tags=dict(parent.tags),
            spec=parent.spec,
        )
        described.artifact.sha256 = saved.sha256
        described.artifact.size_bytes = len(saved.data)
        described.artifact.format = RiverFlavor.name
        described.signature.CopyFrom(parent.signature)
        if session.estimator.classes_ is not None:
            del described.signature.classes[:]
            described.signature.classes.extend(str(c) for c in session.estimator.classes_)
        described.lineage.data.CopyFrom(session.span(parent.lineage.data.schema_version))
        described.lineage.code_version = self._config.code_version
        described.lineage.package_versions.update(package_versions())
        described.lineage.parent_version = parent.version
        described.lineage.trigger = "online"
        described.lineage.train_request_id = f"online:{session.model_name}:{parent.version}"
        version = await self._registry.create_version(described, saved.data)
        metrics.ONLINE_SNAPSHOTS.inc()
        log.info("online_snapshot", model=session.model_name, version=version.version, rows=session.learned)
        session.snapshot_taken(version.version)


def _offer_all(sessions: list[OnlineSession], rows: list[tuple[FeatureRow, int, int]]) -> int:
    return sum(
        session.offer(row, partition, offset) for row, partition, offset in rows for session in sessions
    )
