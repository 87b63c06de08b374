"""Training jobs as the platform's topics tell them: a request, then the trainer's results.

A job is known from its ``TrainRequest`` on ``<prefix>.train.requests`` (who asked, why,
for which model) and followed through the ``TrainResult`` messages on
``<prefix>.train.results`` (started, progress, and one final outcome). Either may be seen
first or alone: a request no trainer has taken yet is *queued*; results of a request sent
before the console started still make a job. Bounded: the newest ``kept`` jobs stay.
No I/O here (the Kafka side is :mod:`services.console.follower`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from google.protobuf.json_format import MessageToDict

from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult, TrainStatus, TrainTrigger

QUEUED = "QUEUED"
FINAL = frozenset({"REGISTERED", "GATES_FAILED", "FAILED", "DUPLICATE"})


def _name(status: TrainStatus.ValueType) -> str:
    return TrainStatus.Name(status).removeprefix("TRAIN_STATUS_")


@dataclass
class Job:
    """One train request and what became of it."""

    request_id: str
    model_name: str
    status: str = QUEUED
    """QUEUED, STARTED, PROGRESS, or a final one: REGISTERED, GATES_FAILED, FAILED, DUPLICATE."""
    progress: float = 0.0
    requested_by: str = ""
    trigger: str = ""
    requested_at: float | None = None
    updated_at: float | None = None
    version: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    gates: list[dict[str, object]] = field(default_factory=list)
    error: str = ""
    duration_seconds: float = 0.0
    idempotency_key: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def sort_time(self) -> float:
        return self.requested_at or self.updated_at or 0.0


class Jobs:
    """The newest jobs by request id.

    Examples
    --------
    >>> from services.common.proto.mlops.v1.events_pb2 import TrainRequest, TrainResult
    >>> jobs = Jobs(kept=2)
    >>> jobs.request(TrainRequest(request_id="r1", model_name="churn", requested_by="ana"))
    >>> jobs.get("r1").status
    'QUEUED'
    >>> jobs.result(TrainResult(request_id="r1", model_name="churn", status=TrainStatus.TRAIN_STATUS_PROGRESS,
    ...                         progress=0.5))
    >>> jobs.result(TrainResult(request_id="r1", model_name="churn", version=3,
    ...                         status=TrainStatus.TRAIN_STATUS_REGISTERED))
    >>> job = jobs.get("r1"); job.status, job.progress, job.version, job.requested_by
    ('REGISTERED', 1.0, 3, 'ana')
    >>> jobs.result(TrainResult(request_id="r1", status=TrainStatus.TRAIN_STATUS_PROGRESS, progress=0.7))
    >>> jobs.get("r1").status  # a late progress message does not reopen a finished job
    'REGISTERED'
    >>> for rid in ("r2", "r3"):
    ...     jobs.request(TrainRequest(request_id=rid, model_name="churn"))
    >>> jobs.get("r1") is None, len(jobs.newest())
    (True, 2)
    """

    def __init__(self, kept: int):
        self._kept = kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def request(self, request: TrainRequest) -> None:
        """A train request was published (by anyone: a person, the monitor, a schedule)."""
        job = self._job(request.request_id, request.model_name)
        job.requested_by = request.requested_by
        job.trigger = TrainTrigger.Name(request.trigger).removeprefix("TRAIN_TRIGGER_").lower()
        job.idempotency_key = request.idempotency_key or job.idempotency_key
        if request.HasField("requested_at"):
            job.requested_at = request.requested_at.ToMicroseconds() / 1e6

    def result(self, result: TrainResult) -> None:
        """The trainer said how the job goes."""
        job = self._job(result.request_id, result.model_name)
        if result.HasField("occurred_at"):
            job.updated_at = result.occurred_at.ToMicroseconds() / 1e6
        if job.finished:
            return
        job.status = _name(result.status)
        job.idempotency_key = result.idempotency_key or job.idempotency_key
        if result.status == TrainStatus.TRAIN_STATUS_PROGRESS:
            job.progress = min(max(result.progress, 0.0), 1.0)
        if job.finished:
            job.progress = 1.0
            job.version = int(result.version)
            job.metrics = dict(result.metrics)
            job.gates = [MessageToDict(g, preserving_proto_field_name=True) for g in result.gates]
            job.error = result.error
            job.duration_seconds = result.duration_seconds

    def get(self, request_id: str) -> Job | None:
        return self._jobs.get(request_id)

    def newest(self, model: str = "") -> list[Job]:
        """Jobs newest first, of one model or all."""
        jobs = [j for j in self._jobs.values() if not model or j.model_name == model]
        return sorted(jobs, key=lambda j: j.sort_time, reverse=True)

    def by_idempotency_key(self, key: str) -> list[Job]:
        """The jobs of one idempotency key (a drift episode's retrain: ``drift:<model>:<episode>``)."""
        return [j for j in self.newest() if key and j.idempotency_key == key]

    def _job(self, request_id: str, model_name: str) -> Job:
        job = self._jobs.get(request_id)
        if job is None:
            job = self._jobs[request_id] = Job(request_id, model_name)
            while len(self._jobs) > self._kept:
                self._jobs.popitem(last=False)
        elif model_name and not job.model_name:
            job.model_name = model_name
        return job
