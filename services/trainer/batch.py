"""Batch scoring: a stored window of a dataset scored by one model version, as a job.

The trainer runs the job; serving computes every score. Rows stream from ingest's dataset
API (in window order, their content hash verified at the end: the lineage), go to serving's
``ModelInfer`` in chunks pinned to the job's version, as the raw fields the version's
signature asks for (serving derives the derived features, as for any request), and the
answers are stored (exactly one per row: :mod:`.batch_store`) and published on
``<prefix>.batch.scores``. A batch score is therefore what an online request for the same
row gets from the same version, with no second prediction path to drift from it.

A job that stops (trainer killed, dependency away) is resumed by the redelivered request:
the rows already scored are skipped, the rest scored. Progress and the outcome go to
``<prefix>.batch.results``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from services.common.aliases import PRODUCTION
from services.common.clients.inference import Inference
from services.common.errors import Internal, InvalidArgument, PlatformError
from services.common.kafka import is_transient
from services.common.logging import get_logger
from services.common.proto.mlops.v1.batch_pb2 import BatchScore, BatchScoreRequest, BatchScoreResult
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import DataWindow, MaterializedWindow, Signature
from services.common.proto.mlops.v1.registry_pb2 import ModelVersion
from services.trainer.batch_store import SCORES, BatchStore

log = get_logger(__name__)

JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
Column = list[float | str | None]


class Scorer(Protocol):
    """Serving's ModelInfer (:class:`services.common.clients.inference.InferenceClient`)."""

    async def infer_columns(
        self,
        model: str,
        columns: Mapping[str, Sequence[float | str | None]],
        *,
        version: str = "",
        request_id: str = "",
        row_ids: Sequence[str] = (),
        prediction_log: bool = True,
    ) -> Inference: ...


class Versions(Protocol):
    async def get_version(self, name: str, version: int = 0, alias: str = "") -> ModelVersion: ...


class Windows(Protocol):
    async def get_schema(self, name: str, version: int = 0) -> DatasetSchema: ...

    def iter_window(
        self, window: DataWindow, labelled_only: bool = True, chunk_rows: int = 0
    ) -> AsyncIterator[FeatureRow | MaterializedWindow]: ...


@dataclass(frozen=True)
class BatchConfig:
    chunk_rows: int = 256
    """Rows per ModelInfer call (within serving's ``SERVING_MAX_ROWS``)."""
    progress_interval_seconds: float = 1.0
    scores_topic: str = ""


def raw_columns(signature: Signature) -> list[str]:
    """The fields a request to this version sends: its features that are not derived, then
    the raw inputs of the derived ones.

    >>> from services.common.proto.mlops.v1.model_pb2 import DerivedFeature
    >>> raw_columns(Signature(feature_names=["amount", "hour"],
    ...     derived=[DerivedFeature(name="hour", function="hour_of_day", inputs=["ts"])]))
    ['amount', 'ts']
    """
    derived = {d.name for d in signature.derived}
    columns = [name for name in signature.feature_names if name not in derived]
    for feature in signature.derived:
        columns += [name for name in feature.inputs if name not in columns and name not in derived]
    return columns


def column_values(rows: Sequence[FeatureRow], name: str, timestamp_field: str) -> Column:
    """One raw field of ``rows`` as serving takes it: numbers (booleans as 0/1), text, None
    where missing; the dataset's timestamp field from the rows' event time, in epoch seconds."""
    values: Column = []
    for row in rows:
        if name in row.features:
            value = row.features[name]
            kind = value.WhichOneof("kind")
            if kind == "string_value":
                values.append(value.string_value)
            elif kind == "bool_value":
                values.append(1.0 if value.bool_value else 0.0)
            elif kind == "number_value":
                values.append(value.number_value)
            else:
                values.append(None)
        elif name == timestamp_field and row.HasField("event_time"):
            values.append(row.event_time.seconds + row.event_time.nanos / 1e9)
        else:
            values.append(None)
    return values


class BatchJobs:
    """Runs batch scoring jobs; ``publish`` sends records and returns once acknowledged."""

    def __init__(
        self,
        *,
        store: BatchStore,
        registry: Versions,
        datasets: Windows,
        serving: Scorer,
        publish_result: Callable[[BatchScoreResult], Awaitable[None]],
        publish_scores: Callable[[Sequence[BatchScore]], Awaitable[None]],
        config: BatchConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._store = store
        self._registry = registry
        self._datasets = datasets
        self._serving = serving
        self._publish_result = publish_result
        self._publish_scores = publish_scores
        self._config = config
        self._clock = clock

    async def run(self, request: BatchScoreRequest) -> BatchScoreResult:
        """Run (or resume, or re-report) the job; its final result, also published. A
        transient failure (a dependency away) raises: the request is retried, and resumes."""
        started = time.monotonic()
        result = BatchScoreResult(
            job_id=request.job_id,
            model_name=request.model_name,
            scores_topic=self._config.scores_topic,
            scores_collection=SCORES,
            requested_by=request.requested_by,
        )
        try:
            _check(request)
            job = await self._store.open(request, self._clock())
            if job.result is not None:
                await self._publish_result(job.result)  # the requester may be waiting for it again
                return job.result
            await self._score(job.request, job.version, result, started)
        except Exception as exc:
            if is_transient(exc):
                raise  # retried by the consumer loop; the job resumes where it stopped
            if isinstance(exc, PlatformError):
                error: PlatformError = exc
            else:
                log.exception("batch_crashed", job=request.job_id)
                error = Internal(f"{type(exc).__name__}: {exc}")
            result.state = BatchScoreResult.STATE_FAILED
            result.error, result.error_kind = error.message, error.kind.label
            log.info("batch_failed", job=request.job_id, kind=error.kind.label, error=error.message)
        else:
            result.state = BatchScoreResult.STATE_SUCCEEDED
        result.seconds = time.monotonic() - started
        result.updated_at.FromDatetime(self._clock())
        if request.job_id and JOB_ID.fullmatch(request.job_id):
            await self._store.finish(result)
        await self._publish_result(result)
        return result

    async def _score(
        self, request: BatchScoreRequest, pinned: int, result: BatchScoreResult, started: float
    ) -> None:
        version = pinned or request.version
        if not version:
            current = await self._registry.get_version(request.model_name, alias=request.alias or PRODUCTION)
            version = await self._store.pin(request.job_id, current.version)
        described = await self._registry.get_version(request.model_name, version=version)
        schema = await self._datasets.get_schema(request.window.dataset)
        signature = described.signature
        columns = raw_columns(signature)
        result.version = version
        result.state = BatchScoreResult.STATE_RUNNING
        log.info("batch_started", job=request.job_id, model=request.model_name, version=version)
        chunk: list[FeatureRow] = []
        last_progress = time.monotonic()
        async for item in self._datasets.iter_window(
            request.window, labelled_only=False, chunk_rows=self._config.chunk_rows
        ):
            if isinstance(item, MaterializedWindow):
                await self._chunk(request, version, signature, schema, columns, chunk)
                result.window.CopyFrom(item)
                result.rows_scored = await self._store.count(request.job_id)
                return
            chunk.append(item)
            if len(chunk) >= self._config.chunk_rows:
                await self._chunk(request, version, signature, schema, columns, chunk)
                chunk = []
                if time.monotonic() - last_progress >= self._config.progress_interval_seconds:
                    last_progress = time.monotonic()
                    result.rows_scored = await self._store.count(request.job_id)
                    result.seconds = last_progress - started
                    result.updated_at.FromDatetime(self._clock())
                    await self._publish_result(result)

    async def _chunk(
        self,
        request: BatchScoreRequest,
        version: int,
        signature: Signature,
        schema: DatasetSchema,
        columns: list[str],
        rows: list[FeatureRow],
    ) -> None:
        if not rows:
            return
        done = await self._store.scored(request.job_id, [row.event_id for row in rows])
        todo = [row for row in rows if row.event_id not in done]
        if not todo:
            return
        answer = await self._serving.infer_columns(
            request.model_name,
            {name: column_values(todo, name, schema.timestamp_field) for name in columns},
            version=str(version),
            request_id=f"{request.job_id}:{todo[0].event_id}",
            row_ids=[row.event_id for row in todo],
            prediction_log=False,
        )
        scores = _scores(request, version, signature, todo, answer.outputs)
        await self._store.save(scores)
        await self._publish_scores(scores)


def _scores(
    request: BatchScoreRequest,
    version: int,
    signature: Signature,
    rows: Sequence[FeatureRow],
    outputs: Mapping[str, np.ndarray[Any, Any]],
) -> list[BatchScore]:
    scores = []
    for i, row in enumerate(rows):
        score = BatchScore(
            job_id=request.job_id,
            model_name=request.model_name,
            version=version,
            event_id=row.event_id,
            entity_id=row.entity_id,
            event_time=row.event_time,
        )
        if "probabilities" in outputs:
            score.probabilities.extend(float(p) for p in outputs["probabilities"][i])
            score.classes.extend(signature.classes)
        if "label" in outputs:
            score.label = str(outputs["label"][i])
        if "value" in outputs:
            score.value = float(outputs["value"][i])
        scores.append(score)
    return scores


def _check(request: BatchScoreRequest) -> None:
    if not JOB_ID.fullmatch(request.job_id):
        raise InvalidArgument("job_id: 1 to 128 of letters, digits, '.', '_', ':', '-'", field="job_id")
    if not request.model_name:
        raise InvalidArgument("model_name is required", field="model_name")
    if not request.window.dataset:
        raise InvalidArgument("window.dataset is required", field="window.dataset")
    if request.version and request.alias:
        raise InvalidArgument("give a version or an alias, not both", field="alias")
