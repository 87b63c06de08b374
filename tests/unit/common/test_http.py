"""The API's documentation is public and says what every route needs: the OpenAPI document,
/docs and /redoc answer without a token (they describe routes, hold no data, and a browser
cannot send a bearer token to read them), and every route but health declares the bearer
token it needs, so the public document never advertises an open route by mistake."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends

from services.common.auth import Principal, Scope
from services.common.http import create_app, require_scope
from tests.helpers.keys import KEYS

Reader = Annotated[Principal, Depends(require_scope(Scope.READ))]


async def test_documentation_is_public_and_every_route_but_health_needs_a_token() -> None:
    app = create_app("docs", "1", verifier=KEYS.verifier())

    @app.get("/v1/things")
    async def things(principal: Reader) -> list[str]:
        return []

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for page in ("/docs", "/redoc"):
            answer = await client.get(page)
            assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
        document = (await client.get("/openapi.json")).json()
        assert (await client.get("/v1/things")).status_code == 401
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/health/"):
                assert "security" not in operation, f"{method} {path}"
            else:
                assert operation.get("security") == [{"HTTPBearer": []}], f"{method} {path} declares no token"
