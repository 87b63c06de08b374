"""Training: the jobs the platform's topics tell of, one job's progress and outcome (with
the search's trials once a version is registered), and a train request from a spec.

The trainer has no runs API yet: jobs are read from ``train.requests`` and
``train.results`` by the console itself (:mod:`services.console.follower`). The page is
for people whose token the registry accepted for reading; a request is published only
for a token the registry still accepts and whose scopes include write in the model's team
(training makes a version), and names that token's subject as ``requested_by``. The topics
carry every team's jobs: a person sees only the jobs of the models their token may read
(an administrator, every job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.common.auth import Scope
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.proto.mlops.v1.events_pb2 import TrainTrigger
from services.common.proto.mlops.v1.model_pb2 import DataWindow, ModelSpec
from services.common.train_requests import parse_duration, parse_spec, train_request
from services.common.trials import recorded_trials
from services.console.jobs import Job
from services.console.web import ConsoleDep, Form, Person, checked_name, is_htmx, redirect, render

router = APIRouter()

MAX_SPEC_CHARS = 100_000
MAX_ROWS = 100_000_000


@router.get("/training", include_in_schema=False)
async def jobs(
    request: Request, console: ConsoleDep, who: Person, model: Annotated[str, Query(max_length=128)] = ""
) -> Response:
    context = {"jobs": await _readable(console, who, console.jobs.newest(model.strip())), "model": model}
    return render(request, "_jobs.html" if is_htmx(request) else "training.html", context)


async def _readable(console: ConsoleDep, who: Person, jobs: Sequence[Job]) -> list[Job]:
    """The jobs of the models the person's token may read. A job of a model the registry
    does not know yet is shown to administrators only: to the person it is as a model of
    another team, which the registry does not tell apart from one that does not exist."""
    if who.identity.may(Scope.ADMIN) or not jobs:
        return list(jobs)
    readable = {m.name for m in await console.registry.list_models()}
    return [j for j in jobs if j.model_name in readable]


@router.get("/training/jobs/{request_id}", include_in_schema=False)
async def job(request: Request, request_id: str, console: ConsoleDep, who: Person) -> Response:
    found = console.jobs.get(request_id)
    if found is not None and not await _readable(console, who, [found]):
        found = None  # another team's job: as if there were none
    if found is None:
        raise NotFound(f"no job {request_id[:80]!r} among the {console.settings.jobs_kept} newest")
    version = None
    if found.version:
        version = await console.registry.get_version(found.model_name, found.version)
    return render(
        request,
        "_job.html" if is_htmx(request) else "job.html",
        {
            "job": found,
            "version": version,
            "trials": recorded_trials(version.params) if version is not None else [],
        },
    )


@router.get("/training/new", include_in_schema=False)
async def new_request(
    request: Request, console: ConsoleDep, who: Person, model: Annotated[str, Query(max_length=128)] = ""
) -> Response:
    models, _ = await console.registry.models_page(page_size=200)
    return render(request, "train_new.html", {"models": models, "model": model, "form": {}, "error": None})


def _spec(form: dict[str, str], name: str) -> ModelSpec | None:
    text = form.get("spec", "").strip()
    if not text:
        return None
    if len(text) > MAX_SPEC_CHARS:
        raise InvalidArgument(f"spec: at most {MAX_SPEC_CHARS} characters", field="spec")
    try:
        spec = parse_spec(text, yaml_format=not text.startswith("{"))
    except ValueError as exc:
        raise InvalidArgument(f"spec: {exc}", field="spec") from None
    if spec.model_name and spec.model_name != name:
        raise InvalidArgument(f"spec: it is for model {spec.model_name!r}, not {name!r}", field="spec")
    spec.model_name = name
    return spec


def _window(form: dict[str, str], now: float) -> DataWindow | None:
    last = form.get("last", "").strip()
    min_rows = form.get("min_rows", "").strip()
    if not last and not min_rows:
        return None
    window = DataWindow()
    if last:
        try:
            window.start_time.FromSeconds(int(now - parse_duration(last).total_seconds()))
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument(f"last: {exc}", field="last") from None
    if min_rows:
        if not min_rows.isdigit() or int(min_rows) > MAX_ROWS:
            raise InvalidArgument(f"min_rows: a whole number up to {MAX_ROWS}", field="min_rows")
        window.min_rows = int(min_rows)
    return window


@router.post("/training", include_in_schema=False)
async def submit(request: Request, console: ConsoleDep, who: Person, form: Form) -> Response:
    name = form.get("model", "").strip()
    try:
        checked_name(name)
        spec = _spec(form, name)
        window = _window(form, console.clock())
        # The registry takes the token now (not only at sign-in) and the model is of the
        # person's teams; what the token claims, the registry has just verified.
        found = await console.registry.get_model(name)
        if not who.identity.may(Scope.WRITE, found.team):
            raise PermissionDenied(
                f"training makes a version: it needs a token with the write scope in team {found.team!r}"
            )
    except (InvalidArgument, NotFound) as exc:
        models, _ = await console.registry.models_page(page_size=200)
        return render(
            request, "train_new.html", {"models": models, "model": name, "form": form, "error": exc}, 400
        )
    job_request = train_request(
        name,
        spec=spec,
        window=window,
        trigger=TrainTrigger.TRAIN_TRIGGER_MANUAL,
        requested_by=who.identity.subject,
    )
    await console.follower.submit(job_request)
    return redirect(request, f"/training/jobs/{job_request.request_id}")
