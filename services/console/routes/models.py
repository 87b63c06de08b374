"""Models: the list with its filters, a model's page, a version's gate report, two versions
side by side, and the lineage graph. Changes live in :mod:`.actions`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from services.common.auth import Scope
from services.common.errors import InvalidArgument
from services.common.trials import recorded_trials
from services.console import compare as comparing
from services.console import lineage as graph
from services.console.routes.actions import offered
from services.console.web import ConsoleDep, Person, checked_name, is_htmx, render

router = APIRouter()

PAGE_SIZE = 50


def parse_tag(text: str) -> dict[str, str]:
    """A tag filter written ``key=value`` (or just ``key``: any value is not supported by the
    registry, so a bare key is refused, naming the field).

    >>> parse_tag("team=fraud"), parse_tag("")
    ({'team': 'fraud'}, {})
    """
    text = text.strip()
    if not text:
        return {}
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidArgument("tag: write the filter as key=value", field="tag")
    return {key.strip(): value.strip()}


@router.get("/models", include_in_schema=False)
async def models(
    request: Request,
    console: ConsoleDep,
    who: Person,
    q: Annotated[str, Query(max_length=128)] = "",
    tag: Annotated[str, Query(max_length=256)] = "",
    alias: Annotated[str, Query(max_length=128)] = "",
    page: Annotated[str, Query(max_length=1024)] = "",
) -> Response:
    found, next_page = await console.registry.models_page(
        alias=alias.strip(),
        name_contains=q.strip(),
        tags=parse_tag(tag),
        page_size=PAGE_SIZE,
        page_token=page,
    )
    context = {"models": found, "next_page": next_page, "q": q, "tag": tag, "alias": alias, "page": page}
    return render(request, "_models_table.html" if is_htmx(request) else "models.html", context)


@router.get("/models/{name}", include_in_schema=False)
async def model(request: Request, name: str, console: ConsoleDep, who: Person) -> Response:
    registry = console.registry
    found = await registry.get_model(checked_name(name))
    versions, more = await registry.versions_page(name, page_size=PAGE_SIZE)
    history = await registry.alias_history(name, limit=50)
    audit = await registry.audit_trail(name) if who.identity.may(Scope.ADMIN) else None
    production = found.aliases.get("production", 0)
    newest = versions[0].version if versions else 0
    others = [v.version for v in versions if v.version != production]
    return render(
        request,
        "model.html",
        {
            "model": found,
            "versions": versions,
            "more_versions": bool(more),
            "alias_history": history,
            "audit": audit,
            "compare_a": production or (others[1] if len(others) > 1 else newest),
            "compare_b": others[0] if others else newest,
            "headline": comparing.headline,
        },
    )


@router.get("/models/{name}/versions/{version}", include_in_schema=False)
async def version_page(
    request: Request, name: str, version: int, console: ConsoleDep, who: Person
) -> Response:
    found = await console.registry.get_version(checked_name(name), version)
    model = await console.registry.get_model(name)
    return render(
        request,
        "version.html",
        {
            "model": model,
            "version": found,
            "gates": [comparing.gate(g) for g in found.gates],
            "params": sorted(comparing.plain_params(found.params).items()),
            "trials": recorded_trials(found.params),
            "data": comparing.data_rows(found),
            "headline": comparing.headline(found.metrics),
            "profile": list(found.reference_profile.features),
            "actions": offered(model.aliases, found, who.identity, model.team),
        },
    )


@router.get("/models/{name}/compare", include_in_schema=False)
async def compare(
    request: Request,
    name: str,
    console: ConsoleDep,
    who: Person,
    a: Annotated[int, Query(ge=1)],
    b: Annotated[int, Query(ge=1)],
) -> Response:
    checked_name(name)
    first = await console.registry.get_version(name, a)
    second = await console.registry.get_version(name, b)
    context = {"name": name, "comparison": comparing.compare(first, second)}
    return render(request, "_compare.html" if is_htmx(request) else "compare.html", context)


@router.get("/models/{name}/versions/{version}/lineage", include_in_schema=False)
async def lineage(request: Request, name: str, version: int, console: ConsoleDep, who: Person) -> Response:
    found = await console.registry.lineage(checked_name(name), version)
    return render(request, "lineage.html", {"lineage": found, "graph": graph.build(found)})
