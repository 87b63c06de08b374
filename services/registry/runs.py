"""Training runs: every trainer job, failed ones included, as the registry keeps it.

The trainer publishes what becomes of each train request on ``mlops.train.results``
(STARTED, PROGRESS, then REGISTERED, GATES_FAILED or FAILED; DUPLICATE for a request
answered by an earlier job with the same idempotency key). The registry folds those
results into one :class:`Run` per job (:func:`fold`), keyed by the request id of the
request that opened it. The topic is the route, rather than the trainer calling the
registry, so a job is recorded even when the registry was away while it ran (the
results wait on the topic), and a failed job, which registers no version, still leaves
its run, with the search trials it got through.

Folding is idempotent and order-tolerant, as at-least-once delivery needs: a result
delivered twice changes nothing, a run that has finished never goes back to running,
and progress only grows.

>>> from services.common.proto.mlops.v1.events_pb2 import TrainResult, TrainStatus
>>> started = TrainResult(request_id="r1", model_name="churn", status=TrainStatus.TRAIN_STATUS_STARTED)
>>> run = fold(None, started)
>>> RunState.Name(run.state), run.progress
('RUN_STATE_RUNNING', 0.0)
>>> done = TrainResult(request_id="r1", model_name="churn", status=TrainStatus.TRAIN_STATUS_FAILED, error="no rows")
>>> run = fold(run, done)
>>> RunState.Name(run.state), run.error
('RUN_STATE_FAILED', 'no rows')
>>> fold(run, started) is None  # a late redelivery of STARTED changes nothing
True
"""

from __future__ import annotations

from services.common.auth import DEFAULT_TEAM
from services.common.proto.mlops.v1 import events_pb2, runs_pb2
from services.registry import validation
from services.registry.changes import Actor, UseCases
from services.registry.errors import InvalidArgument, NotFound, Unavailable
from services.registry.store import Page
from services.registry.store.runs import RunRepository

Run = runs_pb2.Run
RunState = runs_pb2.RunState
TrainResult = events_pb2.TrainResult
TrainStatus = events_pb2.TrainStatus

MAX_TRIALS = 2000
"""Trials kept per run (a search stops far earlier within its time budget)."""
MAX_ATTEMPTS = 5
"""Compare-and-set attempts before a contended fold gives up (to be retried by redelivery)."""

FINISHED = {
    TrainStatus.TRAIN_STATUS_REGISTERED: RunState.RUN_STATE_REGISTERED,
    TrainStatus.TRAIN_STATUS_GATES_FAILED: RunState.RUN_STATE_GATES_FAILED,
    TrainStatus.TRAIN_STATUS_FAILED: RunState.RUN_STATE_FAILED,
}
RUNNING = {TrainStatus.TRAIN_STATUS_STARTED, TrainStatus.TRAIN_STATUS_PROGRESS}


def _opened(result: TrainResult) -> Run:
    run = Run(
        run_id=result.request_id,
        model_name=result.model_name,
        state=RunState.RUN_STATE_RUNNING,
        idempotency_key=result.idempotency_key,
    )
    run.started_at.CopyFrom(result.occurred_at)
    return run


def _describe(run: Run, result: TrainResult) -> None:
    """What every result may say of the job: how it was asked for, and on which data."""
    if result.trigger:
        run.trigger = result.trigger
    if result.requested_by:
        run.requested_by = result.requested_by
    if result.dataset:
        run.dataset = result.dataset
    run.updated_at.CopyFrom(result.occurred_at)


def fold(run: Run | None, result: TrainResult) -> Run | None:
    """``run`` (None: not seen yet) after ``result``; None when the result changes nothing.

    DUPLICATE results are not folded here: they belong to the run their idempotency key
    names (:func:`coalesce`)."""
    if result.status in RUNNING:
        if run is not None and run.state != RunState.RUN_STATE_RUNNING:
            return None  # finished already: a late or redelivered result
        after = Run()
        after.CopyFrom(run if run is not None else _opened(result))
        _describe(after, result)
        after.progress = max(after.progress, result.progress)
        return None if run is not None and after == run else after
    state = FINISHED.get(result.status)
    if state is None:
        return None
    after = Run()
    after.CopyFrom(run if run is not None else _opened(result))
    if run is None:
        # Only the final result was seen (the topic kept no more): it says how long the job took.
        after.started_at.FromNanoseconds(
            result.occurred_at.ToNanoseconds() - int(result.duration_seconds * 1e9)
        )
    _describe(after, result)
    after.state = state
    after.progress = 1.0
    after.version = result.version
    after.family = result.family
    after.params_json = result.params_json
    after.error = result.error[: validation.MAX_TEXT]
    after.duration_seconds = result.duration_seconds
    after.finished_at.CopyFrom(result.occurred_at)
    after.metrics.clear()
    after.metrics.update(result.metrics)
    del after.gates[:]
    after.gates.extend(result.gates)
    del after.trials[:]
    after.trials.extend(result.trials[:MAX_TRIALS])
    return None if run is not None and after == run else after


def coalesce(run: Run, result: TrainResult) -> Run | None:
    """``run`` with the DUPLICATE ``result``'s request among those it answered (None: it is already)."""
    if result.request_id in run.coalesced_request_ids or result.request_id == run.run_id:
        return None
    after = Run()
    after.CopyFrom(run)
    after.coalesced_request_ids.append(result.request_id)
    return after


def check_result(result: TrainResult) -> None:
    """What a result must carry to become a run; :class:`InvalidArgument` naming the field."""
    validation.model_name(result.model_name, "model_name")
    validation.text(result.request_id, "request_id", validation.MAX_SHORT_TEXT, required=True)
    validation.text(result.idempotency_key, "idempotency_key", validation.MAX_SHORT_TEXT)


class RunUseCases(UseCases):
    async def record_result(self, result: TrainResult) -> None:
        """Fold the trainer's ``result`` into its run (see :func:`fold`)."""
        check_result(result)
        for _ in range(MAX_ATTEMPTS):
            if result.status == TrainStatus.TRAIN_STATUS_DUPLICATE:
                if not result.idempotency_key:
                    return
                stored = await self._store.runs.by_idempotency_key(result.idempotency_key)
                after = None if stored is None else coalesce(stored.run, result)
            else:
                stored = await self._store.runs.get(result.request_id)
                after = fold(None if stored is None else stored.run, result)
            if after is None:
                return
            if stored is None:
                if await self._store.runs.put(after, 0, await self._team_of(result.model_name)):
                    return
            elif await self._store.runs.put(after, stored.revision):
                return
        raise Unavailable(f"run {result.request_id!r} kept changing under concurrent writers; retry later")

    async def _team_of(self, model_name: str) -> str:
        """The team a new run belongs to: its model's, or the default team, where the trainer
        creates a model a train request names before it exists."""
        model = await self._store.models.get(model_name)
        return model.team if model is not None else DEFAULT_TEAM

    async def get_run(self, actor: Actor, run_id: str) -> Run:
        """The run opened by ``run_id`` (a request id), or the one it was coalesced into;
        NOT_FOUND, as for one that does not exist, when it is another team's."""
        validation.text(run_id, "run_id", validation.MAX_SHORT_TEXT, required=True)
        stored = await self._store.runs.find(run_id)
        if stored is None or not actor.principal.acts_for(stored.team):
            raise NotFound(f"no training run {run_id!r}")
        return stored.run

    async def list_runs(
        self,
        actor: Actor,
        model_name: str = "",
        state: runs_pb2.RunState.ValueType = RunState.RUN_STATE_UNSPECIFIED,
        *,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Run]:
        """Runs newest first, of the caller's teams, of one model and in one state when given."""
        if model_name:
            validation.model_name(model_name, "model_name")
        if state not in RunState.values():
            raise InvalidArgument(f"state: unknown run state {state}", field="state")
        request = self._page(RunRepository.NEWEST_FIRST, page_size, page_token)
        return await self._store.runs.page(model_name, state, request, actor.visible_teams())
