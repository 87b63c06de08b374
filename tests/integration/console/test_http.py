"""The console over plain HTTP, against the real registry, monitor and ingest: sign-in,
the security every answer carries, forms that must come from the console, and actions the
person's token does not allow, refused by the registry rather than by the console."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.common.auth import Scope
from services.common.clients.access import AccessClient
from services.common.events import encode
from services.common.kafka import publish
from services.common.proto.mlops.v1.events_pb2 import TrainResult, TrainStatus
from services.console.web import CONTENT_SECURITY_POLICY, SESSION_COOKIE
from tests.helpers.waiting import eventually
from tests.integration.console.conftest import MANUAL, Platform


def counter(text: str, line: str) -> float:
    """A sample's value from a Prometheus exposition (0 when absent)."""
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/login")
    return await client.post(
        "/login", data={"token": token, "form_token": hidden(form.text, "form_token"), "next": "/models"}
    )


@pytest.fixture
async def browser(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies as a browser does on loopback: browsers treat
    http://127.0.0.1 as a secure origin and send ``Secure`` cookies to it, httpx does not."""
    jar: dict[str, str] = {}

    async def remember(response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "max-age=0" in header.lower() or "expires=thu, 01 jan 1970" in header.lower():
                jar.pop(name, None)
            else:
                jar[name] = value

    async def send_cookies(request: httpx.Request) -> None:
        if jar:
            request.headers["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())

    hooks: dict[str, list[Callable[..., Any]]] = {"request": [send_cookies], "response": [remember]}
    async with httpx.AsyncClient(base_url=platform.url, timeout=30, event_hooks=hooks) as client:
        yield client


async def test_pages_need_a_session_and_say_where_to_sign_in(browser: httpx.AsyncClient) -> None:
    answer = await browser.get("/models/churn?x=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fmodels%2Fchurn%3Fx%3D1"
    assert (await browser.get("/health/ready")).status_code == 200
    assert (await browser.get("/openapi.json")).status_code == 404  # pages for people, no API to document


async def test_every_answer_carries_the_security_headers(browser: httpx.AsyncClient) -> None:
    for path in ("/login", "/static/console.js", "/nowhere"):
        headers = (await browser.get(path)).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert (
            "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
            and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
        )
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"


async def test_sign_in_sets_a_sealed_http_only_strict_cookie(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    token = platform.token(Scope.READ)
    answer = await sign_in(browser, token)
    assert answer.status_code == 303 and answer.headers["location"] == "/models"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert token not in cookie and token.split(".")[1] not in cookie  # sealed: the claims are not readable
    page = await browser.get("/models")
    assert page.status_code == 200 and "Signed in as" in page.text and "ana" in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_the_platform_decides_which_tokens_sign_in(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    forged = platform.infra.token(Scope.ADMIN, subject="mallory")[:-4] + "AAAA"  # signature broken
    refused = await sign_in(browser, forged)
    assert refused.status_code == 401 and "refused this token" in refused.text
    assert not any(c.startswith(SESSION_COOKIE + "=") for c in refused.headers.get_list("set-cookie"))
    no_read = await sign_in(browser, platform.token(Scope.PREDICT))
    assert no_read.status_code == 403 and "read scope" in no_read.text
    garbage = await sign_in(browser, "not-a-token")
    assert garbage.status_code == 400
    exposed = (await browser.get("/metrics")).text
    assert counter(exposed, 'mlops_console_sign_ins_total{outcome="refused"}') >= 2
    assert counter(exposed, 'mlops_console_sign_ins_total{outcome="not_a_token"}') >= 1


async def test_a_sign_in_form_from_elsewhere_is_refused(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    """Login CSRF: without the form token bound to this browser's cookie, no session starts."""
    answer = await browser.post("/login", data={"token": platform.token(Scope.READ), "form_token": "x" * 64})
    assert answer.status_code == 403
    assert not any(c.startswith(SESSION_COOKIE + "=") for c in answer.headers.get_list("set-cookie"))


async def test_forms_without_the_session_anti_forgery_token_change_nothing(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    name = await platform.model("csrf", [0.9, 0.92])
    await sign_in(browser, platform.token(Scope.READ, Scope.PROMOTE))
    page = await browser.get(f"/models/{name}/rollback")
    assert page.status_code == 200
    forged = await browser.post(
        f"/models/{name}/rollback", data={"alias": "production", "expected_version": "2"}
    )
    assert forged.status_code == 403 and "another site" in forged.text
    assert (await platform.admin.get_model(name)).aliases["production"] == 2
    done = await browser.post(
        f"/models/{name}/rollback",
        data={"alias": "production", "expected_version": "2", "csrf_token": hidden(page.text, "csrf_token")},
    )
    assert done.status_code == 200 and "Done: rollback" in done.text
    assert (await platform.admin.get_model(name)).aliases["production"] == 1


async def test_an_action_the_token_does_not_allow_is_refused_by_the_registry(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    name = await platform.model("scoped", [0.9], policy=MANUAL)
    await sign_in(browser, platform.token(Scope.READ, subject="rita"))
    version_page = await browser.get(f"/models/{name}/versions/1")
    assert "/versions/1/approve" not in version_page.text  # not offered to a read-only token
    confirm = await browser.get(f"/models/{name}/versions/1/approve")
    refused = await browser.post(
        f"/models/{name}/versions/1/approve", data={"csrf_token": hidden(confirm.text, "csrf_token")}
    )
    assert refused.status_code == 403 and "Not allowed" in refused.text
    exposed = (await browser.get("/metrics")).text
    assert counter(exposed, 'mlops_console_actions_total{action="approve",outcome="permission"}') >= 1
    assert (await platform.admin.get_version(name, 1)).status == 2  # still pending approval
    denials = (await platform.admin.audit_log()).records
    assert any(r.actor == "rita" and r.outcome == "denied" and r.action == "ApproveVersion" for r in denials)


async def test_a_stale_promotion_is_refused_and_says_so(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    name = await platform.model("stale", [0.9, 0.91, 0.92])
    await sign_in(browser, platform.token(Scope.READ, Scope.PROMOTE))
    confirm = await browser.get(f"/models/{name}/versions/1/promote")
    assert hidden(confirm.text, "expected_version") == "3"
    await platform.admin.set_alias(name, "production", 2)  # someone else, meanwhile
    answer = await browser.post(
        f"/models/{name}/versions/1/promote",
        data={
            "alias": "production",
            "expected_version": "3",
            "csrf_token": hidden(confirm.text, "csrf_token"),
        },
    )
    assert answer.status_code == 200 and "Nothing changed" in answer.text and "Look again" in answer.text
    assert (await platform.admin.get_model(name)).aliases["production"] == 2


async def test_sign_out_ends_the_session(platform: Platform, browser: httpx.AsyncClient) -> None:
    await sign_in(browser, platform.token(Scope.READ))
    page = await browser.get("/models")
    out = await browser.post("/logout", data={"csrf_token": hidden(page.text, "csrf_token")})
    assert out.status_code == 303 and out.headers["location"] == "/login?reason=signed_out"
    assert (await browser.get("/models")).status_code == 303


async def test_the_monitor_timeline_the_console_reads_needs_the_read_scope(platform: Platform) -> None:
    url = f"http://127.0.0.1:{platform.monitor.http_port}/v1/timeline/no-such-model"
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(url)).status_code == 401
        denied = await client.get(url, headers={"authorization": f"Bearer {platform.token(Scope.PREDICT)}"})
        assert denied.status_code == 403
        unknown = await client.get(url, headers={"authorization": f"Bearer {platform.token(Scope.READ)}"})
        assert unknown.status_code == 404 and unknown.json()["field"] == "model"


async def test_what_people_wrote_is_shown_as_text_never_as_markup(
    platform: Platform, browser: httpx.AsyncClient
) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    name = f"markup-{uuid.uuid4().hex[:6]}"
    await platform.admin.create_model(name, hostile, tags={"note": hostile})
    await sign_in(browser, platform.token(Scope.READ))
    for path in (f"/models?q={name}", f"/models/{name}"):
        page = (await browser.get(path)).text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page, path
        assert "<script>alert" not in page and "<img src=x" not in page, path


async def test_a_person_sees_only_their_teams_models(platform: Platform, browser: httpx.AsyncClient) -> None:
    team = f"beta-{uuid.uuid4().hex[:6]}"
    admin_token = platform.token(Scope.ADMIN, subject="admin")
    async with AccessClient(f"127.0.0.1:{platform.registry.grpc_port}", lambda: admin_token) as access:
        await access.create_team(team)
    theirs = f"theirs-{uuid.uuid4().hex[:6]}"
    await platform.admin.create_model(theirs, "another team's model", team=team)
    ours = await platform.model("ours", [0.9])  # the default team's, as the person's token is
    # The topics carry both teams' jobs to the console.
    for model in (theirs, ours):
        result = TrainResult(
            request_id=f"{model}-job", model_name=model, status=TrainStatus.TRAIN_STATUS_STARTED
        )
        result.occurred_at.GetCurrentTime()
        await publish(
            platform.producer, [encode(platform.topics.train_results, result, source="/test", key=model)]
        )

    async def both_followed() -> bool:
        assert platform.console.console is not None
        jobs = platform.console.console.jobs
        return jobs.get(f"{ours}-job") is not None and jobs.get(f"{theirs}-job") is not None

    await eventually(both_followed, bool)

    await sign_in(browser, platform.token(Scope.READ))
    listed = (await browser.get("/models")).text
    assert ours in listed and theirs not in listed
    assert (await browser.get(f"/models/{theirs}")).status_code == 404, "as if it did not exist"
    jobs = (await browser.get("/training")).text
    assert ours in jobs and theirs not in jobs
    assert (await browser.get(f"/training/jobs/{theirs}-job")).status_code == 404
    page = await browser.get(f"/models/{ours}")
    assert page.status_code == 200
    await browser.post("/logout", data={"csrf_token": hidden(page.text, "csrf_token")})

    await sign_in(browser, platform.infra.token(Scope.READ, subject="bea", teams=[team]))
    listed = (await browser.get("/models")).text
    assert theirs in listed and ours not in listed
    assert (await browser.get(f"/training/jobs/{theirs}-job")).status_code == 200
    assert f"(read in {team})" in " ".join(listed.split()), "the header names the person's teams"
