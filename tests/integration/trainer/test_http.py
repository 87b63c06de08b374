"""The trainer's HTTP port serves health and metrics only; anything else is refused with the
problem body every platform API answers."""

from __future__ import annotations

import httpx

from services.common.errors import Kind
from tests.helpers.problems import problem_of
from tests.integration.trainer.conftest import Platform


async def test_a_refusal_answers_the_platform_problem_body(platform: Platform) -> None:
    url = f"http://127.0.0.1:{platform.trainer.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/health/live")).status_code == 200
        missing = problem_of(await http.get("/v1/jobs"), 404, Kind.NOT_FOUND)
        assert missing["detail"] == "Not Found"
