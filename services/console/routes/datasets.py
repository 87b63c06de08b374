"""Datasets: their schemas and schema versions, and data quality over time (accepted,
duplicate and refused events, refusals by reason and field), from ingest's HTTP API with
the person's token. Quality over time is ingest's summary asked once per time bucket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from services.common.errors import InvalidArgument
from services.console import charts
from services.console.web import Console, ConsoleDep, Person, render

router = APIRouter()

Range = Annotated[str, Query(alias="range", max_length=8)]
MAX_VERSIONS_SHOWN = 50


def _path(name: str) -> str:
    return quote(name, safe="")


def _range(value: str) -> str:
    if value not in charts.RANGES:
        raise InvalidArgument(f"range: one of {', '.join(charts.RANGES)}", field="range")
    return value


async def _quality(console: Console, name: str, range_name: str) -> tuple[list[charts.Bucket], list[Any]]:
    bounds = charts.buckets(range_name, datetime.fromtimestamp(console.clock(), UTC))
    summaries = await asyncio.gather(
        *(
            console.ingest.get(
                f"/v1/datasets/{_path(name)}/quality",
                {"start": b.start.isoformat(), "end": b.end.isoformat()},
            )
            for b in bounds
        )
    )
    return bounds, list(summaries)


@router.get("/datasets", include_in_schema=False)
async def datasets(request: Request, console: ConsoleDep, who: Person) -> Response:
    return render(request, "datasets.html", {"datasets": await console.ingest.get("/v1/datasets")})


@router.get("/datasets/{name}", include_in_schema=False)
async def dataset(
    request: Request,
    name: str,
    console: ConsoleDep,
    who: Person,
    version: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    span: Range = "24h",
) -> Response:
    latest = await console.ingest.get(f"/v1/datasets/{_path(name)}/schema")
    shown = latest
    if version and version != latest.get("version"):
        shown = await console.ingest.get(f"/v1/datasets/{_path(name)}/schema", {"version": version})
    bounds, summaries = await _quality(console, name, _range(span))
    total = {
        key: sum(int(s.get(key, 0)) for s in summaries)
        for key in ("accepted", "duplicates", "rejected", "labels")
    }
    newest = int(latest.get("version", 1))
    return render(
        request,
        "dataset.html",
        {
            "name": name,
            "schema": shown,
            "latest_version": newest,
            "versions": list(range_of_versions(newest)),
            "range": span,
            "ranges": list(charts.RANGES),
            "buckets": bounds,
            "refusals": charts.refusals_table(summaries),
            "total": total,
        },
    )


def range_of_versions(newest: int) -> range:
    """The schema versions to offer, newest first (the last ``MAX_VERSIONS_SHOWN``)."""
    return range(newest, max(0, newest - MAX_VERSIONS_SHOWN), -1)


@router.get("/datasets/{name}/quality.json", include_in_schema=False)
async def quality_chart(name: str, console: ConsoleDep, who: Person, span: Range = "24h") -> Response:
    bounds, summaries = await _quality(console, name, _range(span))
    return JSONResponse(charts.ingest_chart(bounds, summaries), headers={"cache-control": "no-store"})
