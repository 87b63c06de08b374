"""Monitoring: every watched model's live quality, and one model's accuracy over time with
its drift events, retrain episodes and their outcomes, and data drift per feature against
the training reference. Read from the monitors' ``/v1/status`` and ``/v1/timeline`` and the
registry (the live version's training profile), with the person's token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.common.errors import NotFound, PlatformError
from services.console import charts
from services.console.jobs import Job
from services.console.web import Console, ConsoleDep, Person, checked_name, render

router = APIRouter()


async def _watched(console: Console, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    found = await console.monitors.model(checked_name(name))
    if found is None:
        raise NotFound(
            f"no monitor watches {name!r} (yet: it has to serve a prediction first)", field="model"
        )
    return found


def episodes(timeline: dict[str, Any], jobs_of: Any, live_version: int | None) -> list[dict[str, Any]]:
    """Each retrain the monitor asked for, with what became of it: the trainer's jobs of its
    idempotency key and whether their version went live."""
    out = []
    for retrain in reversed(timeline.get("retrains", [])):
        jobs: list[Job] = jobs_of(retrain["idempotency_key"])
        registered = [j.version for j in jobs if j.status == "REGISTERED" and j.version]
        if any(v == live_version for v in registered):
            outcome = f"v{live_version} trained and live"
        elif registered:
            outcome = f"v{registered[0]} registered, not live"
        elif any(j.finished for j in jobs):
            outcome = ", ".join(f"{j.status.lower().replace('_', ' ')}: {j.error}".rstrip(": ") for j in jobs)
        elif any(j.status != "QUEUED" for j in jobs):
            outcome = "training"
        else:
            outcome = "waiting for a trainer"
        out.append({**retrain, "jobs": jobs, "outcome": outcome})
    return out


async def _features(
    console: Console, name: str, status: dict[str, Any], timeline: dict[str, Any]
) -> list[dict[str, Any]]:
    """Data drift per feature of the live version: its detector, its drift events, and the
    training reference it is measured against (from the registry)."""
    live = status.get("live_version")
    version = next((v for v in status.get("versions", []) if v.get("version") == live), None)
    if live is None or version is None:
        return []
    profile: dict[str, Any] = {}
    try:
        registered = await console.registry.get_version(name, int(live))
        profile = {f.name: f for f in registered.reference_profile.features}
    except NotFound:
        pass  # a version the monitor saw but the registry does not hold (anymore)
    drifts = [d for d in timeline.get("drifts", []) if d.get("kind") == "data" and d.get("version") == live]
    rows = []
    for feature, watch in sorted(version.get("features", {}).items()):
        own = [d for d in drifts if d.get("feature") == feature]
        rows.append(
            {
                "name": feature,
                "state": watch.get("state", ""),
                "samples": watch.get("samples", 0),
                "drifts": watch.get("drifts", 0),
                "reference": watch.get("reference", ""),
                "training": profile.get(feature),
                "last": own[-1] if own else None,
            }
        )
    return rows


@router.get("/monitoring", include_in_schema=False)
async def overview(request: Request, console: ConsoleDep, who: Person) -> Response:
    return render(request, "monitoring.html", {"models": await console.monitors.status()})


async def _live_context(console: Console, name: str) -> dict[str, Any]:
    status, timeline = await _watched(console, name)
    live = status.get("live_version")
    return {
        "name": name,
        "status": status,
        "live": next((v for v in status.get("versions", []) if v.get("version") == live), None),
        "drifts": list(reversed(timeline.get("drifts", []))),
        "episodes": episodes(timeline, console.jobs.by_idempotency_key, live),
        "features": await _features(console, name, status, timeline),
    }


@router.get("/monitoring/{name}", include_in_schema=False)
async def model_page(request: Request, name: str, console: ConsoleDep, who: Person) -> Response:
    return render(request, "monitor_model.html", await _live_context(console, name))


@router.get("/monitoring/{name}/live", include_in_schema=False)
async def live_fragment(request: Request, name: str, console: ConsoleDep, who: Person) -> Response:
    """What the open page refreshes: the figures and tables under the chart."""
    return render(request, "_monitor_live.html", await _live_context(console, name))


@router.get("/monitoring/{name}/chart.json", include_in_schema=False)
async def chart(name: str, console: ConsoleDep, who: Person) -> Response:
    try:
        status, timeline = await _watched(console, name)
    except PlatformError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.kind.http_status)
    return JSONResponse(charts.quality_chart(status, timeline), headers={"cache-control": "no-store"})
