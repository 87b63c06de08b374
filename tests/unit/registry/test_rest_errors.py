"""The REST mirror's error handlers, on an app of their own: whatever goes wrong, the
answer is a problem-details body, and nothing of an unexpected failure leaks."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from services.common.errors import PROBLEM_MEDIA_TYPE, Conflict, problem
from services.registry.rest.errors import install_error_handlers


class Body(BaseModel):
    name: str
    sizes: list[int] = []


def app_with_handlers() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/things")
    async def create(body: Body) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("alias 'production' points at version 2, not at version 1", field="expected_version")

    @app.get("/denied")
    async def denied() -> None:
        raise HTTPException(401, "no bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("password=hunter2 in a stack trace")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_with_handlers(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client


async def test_a_platform_error_is_its_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/conflict")
    assert (response.status_code, response.headers["content-type"]) == (409, PROBLEM_MEDIA_TYPE)
    assert response.json() == problem(
        Conflict("alias 'production' points at version 2, not at version 1", field="expected_version")
    )


async def test_a_validation_error_names_the_first_field_it_found(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json={"sizes": [1, "many"]})
    body = response.json()
    assert (response.status_code, body["kind"], body["code"]) == (422, "invalid", "INVALID_ARGUMENT")
    assert body["field"] == "name"
    assert "name: Field required" in body["detail"] and "sizes[1]:" in body["detail"]
    syntax = await client.post("/things", content=b'{"name": ', headers={"content-type": "application/json"})
    assert (syntax.status_code, syntax.json()["field"]) == (422, "body")


async def test_an_http_error_keeps_its_status_and_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/denied")
    body = response.json()
    assert (response.status_code, body["kind"], body["detail"]) == (401, "unauthenticated", "no bearer token")
    assert response.headers["www-authenticate"] == "Bearer"
    unknown = await client.get("/nowhere")
    assert (unknown.status_code, unknown.json()["kind"]) == (404, "not_found")


async def test_an_unexpected_failure_is_internal_without_its_details(client: httpx.AsyncClient) -> None:
    response = await client.get("/broken")
    body = response.json()
    assert (response.status_code, response.headers["content-type"]) == (500, PROBLEM_MEDIA_TYPE)
    assert (body["kind"], body["detail"]) == ("internal", "internal error")
    assert "hunter2" not in response.text


@pytest.mark.parametrize(
    "module",
    ["services.registry.store.pagination", "services.registry.changes", "services.registry.rest.errors"],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
