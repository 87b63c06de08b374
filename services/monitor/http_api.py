"""HTTP: health and metrics (shared), and the live status of the watched models of the
caller's teams (every model for an admin)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from services.common.auth import Principal, Scope, TokenVerifier
from services.common.errors import NotFound
from services.common.http import create_app, require_scope
from services.common.http_errors import problem_responses
from services.monitor.drift import DriftMonitor
from services.monitor.teams import ModelTeams
from services.monitor.timeline import Timeline

Reader = Annotated[Principal, Depends(require_scope(Scope.READ))]


def create_http_app(
    monitor: DriftMonitor,
    timeline: Timeline,
    verifier: TokenVerifier,
    teams: ModelTeams,
    *,
    ready: Callable[[], bool],
    problems: Callable[[], Sequence[str]] = lambda: (),
    assignment: Callable[[], dict[str, list[int]]],
    version: str,
    clock: Callable[[], float],
) -> FastAPI:
    app = create_app(
        "mlops monitor",
        version,
        verifier=verifier,
        ready=ready,
        problems=problems,
        description="Live model quality and drift. Each monitor process reports the models it watches.",
    )

    @app.get(
        "/v1/status",
        tags=["status"],
        summary="Every model this process watches (versions, accuracy, detectors, drift, what holds "
        "a retrain back and until when) and the partitions it owns.",
    )
    async def status(caller: Reader) -> dict[str, Any]:
        return {"models": await teams.visible(monitor.status(clock()), caller), "assignment": assignment()}

    @app.get(
        "/v1/status/{model}",
        tags=["status"],
        summary="One model's status.",
        responses=problem_responses({404: "This process watches no model of that name (of your teams)."}),
    )
    async def model_status(model: str, caller: Reader) -> dict[str, Any]:
        mine = [entry for entry in monitor.status(clock()) if entry["model"] == model]
        for entry in await teams.visible(mine, caller):
            return entry
        raise NotFound(f"model: {model[:140]!r} is not watched by this monitor", field="model")

    @app.get(
        "/v1/timeline/{model}",
        tags=["status"],
        summary="One model's recent past, oldest first: each version's rolling accuracy and counts "
        "sampled every MONITOR_TIMELINE_INTERVAL_SECONDS, and its latest drift events, retrain "
        "requests and live-version changes. Kept in this process's memory, bounded, and empty after "
        "a restart or when the model moves to another process.",
        responses=problem_responses({404: "This process watches no model of that name (of your teams)."}),
    )
    async def model_timeline(model: str, caller: Reader) -> dict[str, Any]:
        found = timeline.model(model)
        if found is None or not (await teams.readable(model, caller))[0]:
            raise NotFound(f"model: {model[:140]!r} is not watched by this monitor", field="model")
        return found

    return app
