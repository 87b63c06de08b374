"""One train request, from claim to result: spec, window, training, registration.

The runner is where the trainer meets the rest of the platform: the job store (MongoDB),
the dataset API, the registry and the results topic. The computation itself is the
domain's (:class:`~services.trainer.training.Trainer`), run in a worker thread so the
event loop keeps heartbeating to Kafka and answering health checks.

Outcomes: a request either ends its job with one result (REGISTERED, GATES_FAILED or
FAILED, after STARTED and PROGRESS), is answered from an earlier job with the same
idempotency key (DUPLICATE, or the stored result again when it is the same request
redelivered), or raises :class:`~services.common.kafka.TransientError` to be retried
later (a dependency is away, or another trainer holds the job or the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from services.common.aliases import PRODUCTION
from services.common.artifacts import ArtifactError
from services.common.clients.datasets import DatasetClient, WindowIntegrityError
from services.common.clients.registry import RegistryClient
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PlatformError
from services.common.flavors import flavor
from services.common.flavors.base import StoredArtifact
from services.common.kafka import TransientError, is_transient
from services.common.logging import get_logger
from services.common.proto.mlops.v1.events_pb2 import FeatureRow, TrainRequest, TrainResult, TrainStatus
from services.common.proto.mlops.v1.model_pb2 import TRAINING_FEDERATED, ModelSpec
from services.common.proto.mlops.v1.registry_pb2 import ModelVersion, SearchModelVersionsRequest
from services.trainer import metrics
from services.trainer.errors import DataError, SpecError, TrainingFailed
from services.trainer.job_store import Claim, Job, JobState, JobStore
from services.trainer.plan import Limits, TrainingPlan, make_plan, resolve_window
from services.trainer.registration import version_metadata
from services.trainer.search import Configuration, Trial
from services.trainer.training import TrainedCandidate, Trainer

log = get_logger(__name__)
T = TypeVar("T")

ResultSink = Callable[[TrainResult], Awaitable[None]]


class JobCancelled(Exception):
    """The trainer is stopping; the job is left for another trainer (or this one, restarted)."""


class JobLost(Exception):
    """Another trainer took the job over (this one stopped renewing its lease in time)."""


@dataclass(frozen=True)
class ProductionModel:
    """The version the candidate is measured against; ``model`` is None when it cannot be loaded."""

    version: ModelVersion
    model: Any = None
    unusable: str = ""


@dataclass
class RunNotes:
    """What a job learns about itself on the way, for its result whatever the outcome: the
    registry keeps every job as a run, failed ones with the trials they ran."""

    dataset: str = ""
    trials: list[Trial] = field(default_factory=list)
    configuration: Configuration | None = None

    def annotate(self, result: TrainResult) -> None:
        if self.dataset:
            result.dataset = self.dataset
        result.trials.extend(trial.as_message() for trial in self.trials)
        if self.configuration is not None:
            result.family = self.configuration.family.name
            result.params_json = json.dumps(self.configuration.params, sort_keys=True, default=str)


@dataclass(frozen=True)
class RunnerConfig:
    limits: Limits
    code_version: str
    lease_seconds: float
    progress_interval_seconds: float
    signing_key: bytes | None = None


def load_production(version: ModelVersion, data: bytes, signing_key: bytes | None) -> Any:
    """A production artifact, verified and loaded by its flavor: a runtime the gates can score
    against labelled rows (the trainer checks that the dataset still has its features).

    A runtime that knows its classes by position (a booster) takes the names the version's
    signature gives them, which are the labels the holdout holds.
    """
    runtime = flavor(version.artifact.format).load(StoredArtifact.of(version, data), signing_key=signing_key)
    named = list(version.signature.classes)
    if runtime.positional_classes and runtime.classes_ is not None and len(named) == len(runtime.classes_):
        runtime.classes_ = np.array(named, dtype=object)
    return runtime


class JobRunner:
    def __init__(
        self,
        *,
        store: JobStore,
        registry: RegistryClient,
        datasets: DatasetClient,
        results: ResultSink,
        executor: Executor,
        config: RunnerConfig,
    ):
        self._store = store
        self._registry = registry
        self._datasets = datasets
        self._results = results
        self._executor = executor
        self._config = config
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Make a running job give up at its next step (its request will be redelivered)."""
        self._stopping.set()

    async def handle(self, request: TrainRequest) -> None:
        if await self._federated(request):
            # The federation service consumes the same topic and answers it (docs/federation.md).
            log.info("left_to_federation", request=request.request_id, model=request.model_name)
            metrics.JOBS.labels("federated").inc()
            return
        key = request.idempotency_key or request.request_id
        claim, job = await self._store.claim(key, request)
        if claim is Claim.FINISHED:
            await self._answer_from(job, request)
            return
        if claim is Claim.BUSY:
            raise TransientError(f"job {key!r} is running on {job.owner}")
        holder = await self._store.lease(job.model_name, key)
        if holder:
            raise TransientError(f"model {job.model_name!r} is busy with job {holder!r}")
        original = job.request or request
        if job.state is JobState.REGISTERING and await self._recover_registration(job, original):
            await self._answer_if_coalesced(job, request)
            return
        await self._run(job, original)
        await self._answer_if_coalesced(job, request)

    async def _answer_if_coalesced(self, job: Job, request: TrainRequest) -> None:
        if request.request_id != job.request_id:
            finished = await self._store.get(job.key)
            if finished is not None and finished.state.finished:
                await self._answer_from(finished, request)

    async def _answer_from(self, job: Job, request: TrainRequest) -> None:
        """Answer ``request`` with the finished job's result: as is if it is the job's own request."""
        if job.result is None:  # finished without a result cannot happen; be loud rather than silent
            raise TrainingFailed(f"job {job.key!r} finished without a stored result")
        result = TrainResult()
        result.CopyFrom(job.result)
        if request.request_id != job.request_id:
            await self._store.note_coalesced(job.key, request.request_id)
            result.status = TrainStatus.TRAIN_STATUS_DUPLICATE
            result.request_id = request.request_id
            note = f"coalesced into job {job.key!r} of request {job.request_id!r}"
            result.error = f"{note}: {job.result.error}" if job.result.error else note
            metrics.JOBS.labels("duplicate").inc()
        result.occurred_at.GetCurrentTime()
        await self._results(result)

    async def _recover_registration(self, job: Job, request: TrainRequest) -> bool:
        """After a takeover mid-registration: finish with the version already registered, if any."""
        found = await self._registry.search_versions(
            SearchModelVersionsRequest(model_name=job.model_name, train_request_id=job.request_id)
        )
        found = [v for v in found if v.version > job.latest_before_registering]
        if not found:
            return False
        version = max(found, key=lambda v: v.version)
        log.info("registration_recovered", job=job.key, version=version.version)
        result = self._result(request, self._status(version.gates_passed))
        result.version = version.version
        result.metrics.update(version.metrics)
        result.gates.extend(version.gates)
        result.dataset = version.lineage.data.window.dataset
        result.family = version.params.get("family", "")
        if not version.gates_passed:
            result.error = "gates failed: " + "; ".join(
                f"{g.name}: {g.detail}" for g in version.gates if not g.passed
            )
        await self._finish(job, result)
        return True

    @staticmethod
    def _status(gates_passed: bool) -> TrainStatus.ValueType:
        return TrainStatus.TRAIN_STATUS_REGISTERED if gates_passed else TrainStatus.TRAIN_STATUS_GATES_FAILED

    def _result(self, request: TrainRequest, status: TrainStatus.ValueType) -> TrainResult:
        result = TrainResult(
            request_id=request.request_id,
            model_name=request.model_name,
            status=status,
            idempotency_key=request.idempotency_key,
            trigger=request.trigger,
            requested_by=request.requested_by,
            dataset=request.spec.dataset,
        )
        result.occurred_at.GetCurrentTime()
        return result

    async def _finish(self, job: Job, result: TrainResult) -> None:
        state = {
            TrainStatus.TRAIN_STATUS_REGISTERED: JobState.REGISTERED,
            TrainStatus.TRAIN_STATUS_GATES_FAILED: JobState.GATES_FAILED,
        }.get(result.status, JobState.FAILED)
        await self._store.finish(job.key, job.model_name, state, result)
        await self._results(result)
        metrics.JOBS.labels(state.value).inc()

    async def _run(self, job: Job, request: TrainRequest) -> None:
        started = time.monotonic()
        notes = RunNotes()
        await self._results(self._result(request, TrainStatus.TRAIN_STATUS_STARTED))
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(job, lost), name=f"lease:{job.key}")
        metrics.RUNNING.set(1)
        try:
            result = await self._train_and_register(job, request, lost, notes)
        except TrainingFailed as exc:
            result = self._failed(request, exc.describe(), exc.reason)
            log.info("job_failed", job=job.key, reason=exc.reason, error=str(exc))
        except (JobCancelled, asyncio.CancelledError):
            # Stop renewing first, or a beat landing after the release would re-claim the job.
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._store.abandon(job.key, job.model_name)
            raise TransientError(f"job {job.key!r} interrupted by shutdown") from None
        except JobLost:
            # Whoever holds the job now answers it; retrying finds it busy, then finished.
            log.warning("job_lost", job=job.key)
            raise TransientError(f"job {job.key!r} was taken over by another trainer") from None
        except PlatformError as exc:
            if is_transient(exc):
                raise
            result = self._failed(
                request, f"{exc.kind.grpc_code.lower()}: {exc.message}", "dependency_refused"
            )
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("job_crashed", job=job.key)
            result = self._failed(request, f"internal_error: {type(exc).__name__}: {exc}", "internal_error")
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            metrics.RUNNING.set(0)
        result.duration_seconds = time.monotonic() - started
        metrics.JOB_SECONDS.observe(result.duration_seconds)
        notes.annotate(result)
        await self._finish(job, result)

    def _failed(self, request: TrainRequest, error: str, reason: str) -> TrainResult:
        metrics.FAILURES.labels(reason).inc()
        result = self._result(request, TrainStatus.TRAIN_STATUS_FAILED)
        result.error = error
        return result

    async def _heartbeat(self, job: Job, lost: asyncio.Event) -> None:
        interval = self._config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._store.renew(job.key, job.model_name):
                    lost.set()
                    return
            except Exception as exc:  # the database blinked: the next beat tries again
                log.warning("lease_renewal_failed", job=job.key, error=repr(exc))

    async def _spec(self, request: TrainRequest) -> ModelSpec:
        """The request's spec, else the newest of the model's stored spec and its production version's."""
        if request.HasField("spec"):
            spec = ModelSpec()
            spec.CopyFrom(request.spec)
            if not spec.model_name:
                spec.model_name = request.model_name
            if spec.model_name != request.model_name:
                raise SpecError(
                    f"spec is for model {spec.model_name!r} but the request trains {request.model_name!r}",
                    field="spec.model_name",
                )
            return spec
        stored = await self._maybe(self._registry.get_spec(request.model_name))
        production = await self._maybe(self._registry.get_version(request.model_name, alias=PRODUCTION))
        in_production = production.spec if production is not None and production.HasField("spec") else None
        if stored is not None and (in_production is None or stored.spec_version > in_production.spec_version):
            return stored
        if in_production is not None:
            return in_production
        raise SpecError(
            f"the request carries no spec, and model {request.model_name!r} has neither a stored spec "
            "nor a production version to take one from",
            field="spec",
        )

    async def _federated(self, request: TrainRequest) -> bool:
        """Whether the request's spec gives the model to the federation service."""
        try:
            spec = await self._spec(request)
        except SpecError:
            return False  # not the federation's either: the job reports the spec problem
        except PlatformError as exc:
            if exc.kind.retryable:
                raise
            return False  # the job meets the same refusal and reports it
        return spec.training == TRAINING_FEDERATED

    @staticmethod
    async def _maybe(call: Awaitable[T]) -> T | None:
        """The call's answer, or None when the registry has no such thing."""
        try:
            return await call
        except NotFound:
            return None

    async def _production(self, model_name: str) -> ProductionModel | None:
        version = await self._maybe(self._registry.get_version(model_name, alias=PRODUCTION))
        if version is None:
            return None
        try:
            _, data = await self._registry.download_artifact(model_name, version.version)
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(self._executor, self._load, version, data)
        except ArtifactError as exc:
            return ProductionModel(version, unusable=str(exc))
        return ProductionModel(version, model=model)

    def _load(self, version: ModelVersion, data: bytes) -> Any:
        return load_production(version, data, self._config.signing_key)

    async def _train_and_register(
        self, job: Job, request: TrainRequest, lost: asyncio.Event, notes: RunNotes
    ) -> TrainResult:
        spec = await self._spec(request)
        notes.dataset = spec.dataset
        try:
            schema = await self._datasets.get_schema(spec.dataset, spec.schema_version)
        except (NotFound, InvalidArgument) as exc:
            which = f" version {spec.schema_version}" if spec.schema_version else ""
            raise SpecError(f"dataset {spec.dataset!r}{which}: {exc.message}", field="dataset") from None
        plan = make_plan(spec, schema, self._config.limits)
        if self._config.signing_key is None and any(flavor(c.family.flavor).signed for c in plan.candidates):
            raise SpecError(
                "river families are stored as signed pickles, and this trainer has no "
                "MLOPS_ARTIFACT_SIGNING_KEY to sign them with",
                field="estimators",
            )
        window = resolve_window(spec, request.window if request.HasField("window") else None)
        try:
            data = await self._datasets.read_window(window, labelled_only=True)
        except WindowIntegrityError as exc:
            raise DataError(
                f"the window's rows failed their integrity check: {exc}", field="window"
            ) from None
        except (InvalidArgument, FailedPrecondition, NotFound) as exc:
            raise DataError(f"reading the window: {exc.message}", field="window") from None
        production = await self._production(request.model_name)
        candidate = await self._train(plan, data.rows, production, request, notes)
        if lost.is_set():
            raise JobLost()
        parent = production.version.version if production is not None else 0
        loop = asyncio.get_running_loop()
        described, artifact = await loop.run_in_executor(
            self._executor,
            lambda: version_metadata(
                plan=plan,
                spec=spec,
                request=request,
                candidate=candidate,
                window=data.summary,
                code_version=self._config.code_version,
                parent_version=parent,
                signing_key=self._config.signing_key,
            ),
        )
        model = await self._registry.create_model(
            request.model_name, description=f"Trained from dataset {plan.dataset!r}.", exist_ok=True
        )
        if not await self._store.registering(job.key, model.latest_version):
            raise JobLost()
        version = await self._registry.create_version(described, artifact, request_id=request.request_id)
        result = self._result(request, self._status(candidate.gates_passed))
        result.version = version.version
        result.metrics.update(candidate.metrics)
        result.gates.extend(candidate.gates)
        if not candidate.gates_passed:
            result.error = f"gates failed: {candidate.gate_failures}"
        log.info(
            "version_registered",
            job=job.key,
            version=version.version,
            gates_passed=candidate.gates_passed,
            family=candidate.configuration.family.name,
            metric=plan.metric.name,
            score=candidate.metrics.get(plan.metric.name),
        )
        return result

    async def _train(
        self,
        plan: TrainingPlan,
        rows: list[FeatureRow],
        production: ProductionModel | None,
        request: TrainRequest,
        notes: RunNotes,
    ) -> TrainedCandidate:
        loop = asyncio.get_running_loop()
        progress_queue: asyncio.Queue[float] = asyncio.Queue()
        stopping = self._stopping

        def progress(fraction: float, message: str) -> None:
            # Called from the worker thread: the only way back in is thread-safe.
            if stopping.is_set():
                raise JobCancelled()
            loop.call_soon_threadsafe(progress_queue.put_nowait, fraction)

        trainer = Trainer(
            plan,
            rows,
            baseline_version=production.version.version if production is not None else 0,
            baseline_model=production.model if production is not None else None,
            baseline_features=list(production.version.signature.feature_names)
            if production is not None
            else (),
            progress=progress,
        )
        notes.trials = trainer.trials  # filled as the search runs, kept if the job fails
        reporter = asyncio.create_task(self._report_progress(request, progress_queue))
        try:
            candidate = await loop.run_in_executor(self._executor, trainer.run)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        notes.configuration = candidate.configuration
        for trial in candidate.trials:
            metrics.TRIALS.labels(trial.family).inc()
        return candidate

    async def _report_progress(self, request: TrainRequest, queue: asyncio.Queue[float]) -> None:
        """PROGRESS results, at most one per ``progress_interval_seconds`` (the latest fraction wins)."""
        last = 0.0
        while True:
            fraction = await queue.get()
            while not queue.empty():
                fraction = queue.get_nowait()
            wait = last + self._config.progress_interval_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                while not queue.empty():
                    fraction = queue.get_nowait()
            result = self._result(request, TrainStatus.TRAIN_STATUS_PROGRESS)
            result.progress = fraction
            try:
                await self._results(result)
            except Exception as exc:  # progress is a courtesy: never fail a job over it
                log.warning("progress_publish_failed", error=repr(exc))
            last = time.monotonic()
