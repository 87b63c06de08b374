"""Every error a platform HTTP app answers is one problem-details body, whatever raised it:
a platform error, an HTTPException, FastAPI's validation, a token check or a bug."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, HTTPException, Query

from services.common.auth import Principal, Scope
from services.common.errors import PROBLEM_MEDIA_TYPE, Kind, NotFound, Unavailable
from services.common.http import create_app, require_scope
from services.common.http_errors import ProblemDetails, problem_responses
from tests.helpers.keys import KEYS
from tests.helpers.problems import MEMBERS, problem_of

Reader = Annotated[Principal, Depends(require_scope(Scope.READ))]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app("errors", "1", verifier=KEYS.verifier())

    @app.get(
        "/things/{name}",
        responses={**problem_responses({404: "No such thing."}), 403: {"description": "Not yours."}},
    )
    async def thing(name: str, principal: Reader, limit: Annotated[int, Query(ge=1)] = 1) -> dict[str, Any]:
        if name == "away":
            raise Unavailable("the database is away")
        if name == "teapot":
            raise HTTPException(418, "short and stout")
        if name == "bug":
            raise RuntimeError("a detail the caller must not see")
        raise NotFound(f"no thing {name!r}", field="name")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"authorization": f"Bearer {KEYS.mint('tester', Scope.READ)}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as http:
        yield http


def test_the_documented_body_is_the_one_answered() -> None:
    assert set(ProblemDetails.model_fields) == MEMBERS


async def test_a_platform_error_answers_its_kind_status_and_field(client: httpx.AsyncClient) -> None:
    body = problem_of(await client.get("/things/lamp"), 404, Kind.NOT_FOUND)
    assert (body["detail"], body["field"], body["title"]) == ("no thing 'lamp'", "name", "Not Found")
    away = await client.get("/things/away")
    problem_of(away, 503, Kind.UNAVAILABLE)
    assert away.headers["retry-after"] == "1"


async def test_fastapis_own_refusals_answer_the_same_body(client: httpx.AsyncClient) -> None:
    invalid = problem_of(await client.get("/things/lamp?limit=0"), 422, Kind.INVALID)
    assert invalid["field"] == "limit" and invalid["detail"].startswith("limit: ")
    problem_of(await client.get("/nowhere"), 404, Kind.NOT_FOUND)
    assert problem_of(await client.get("/things/teapot"), 418, Kind.INVALID)["detail"] == "short and stout"
    bug = problem_of(await client.get("/things/bug"), 500, Kind.INTERNAL)
    assert "must not see" not in bug["detail"]


async def test_token_refusals_are_problems_and_401_asks_for_a_bearer_token(client: httpx.AsyncClient) -> None:
    missing = await client.get("/things/lamp", headers={"authorization": ""})
    problem_of(missing, 401, Kind.UNAUTHENTICATED)
    assert missing.headers["www-authenticate"] == "Bearer"
    writer = KEYS.mint("tester", Scope.WRITE)
    denied = await client.get("/things/lamp", headers={"authorization": f"Bearer {writer}"})
    assert problem_of(denied, 403, Kind.PERMISSION)["detail"] == "token for 'tester' lacks scope 'read'"


async def test_the_openapi_document_declares_problem_bodies(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    responses = document["paths"]["/things/{name}"]["get"]["responses"]
    # Declared by the route (404), answered by require_scope (403), by FastAPI (422).
    for status in ("404", "403", "422"):
        assert list(responses[status]["content"]) == [PROBLEM_MEDIA_TYPE]
    schemas = document["components"]["schemas"]
    assert "ProblemDetails" in schemas and "HTTPValidationError" not in schemas
