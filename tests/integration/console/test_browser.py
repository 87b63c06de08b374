"""The console in a real browser: Debian's headless Chromium driven by Playwright, against
the real registry, monitor, ingest and broker of this package's platform.

Every test fails on a JavaScript error, a console error or a Content-Security-Policy
violation on any page it opened. With ``CONSOLE_SCREENSHOTS=<dir>`` set (``make
screenshots``) the tests save the main pages there.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    async_playwright,
    expect,
)

from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.events import encode
from services.common.kafka import publish
from services.common.proto.mlops.v1.events_pb2 import TrainResult, TrainStatus
from tests.helpers.datasets import orders_schema
from tests.integration.console.conftest import MANUAL, Platform

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
INSTALLED = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000
"""How long an expectation may wait: the machine is shared; waits end as soon as they can."""

expect.set_options(timeout=WAIT_MS)

RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


class Watched:
    """A page and everything that went wrong on it.

    A test that makes the console refuse something on purpose names the console error
    Chromium logs for that answer in ``expected`` ("status of 400"); it must then occur.
    """

    def __init__(self, page: Page):
        self.page = page
        self.errors: list[str] = []
        self.expected: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    async def check(self) -> None:
        try:
            violations = await self.page.evaluate("window.__cspViolations || []")
        except Error:  # the page is gone
            violations = []
        assert not violations, f"CSP violations: {violations}"
        unexpected = [e for e in self.errors if not any(text in e for text in self.expected)]
        assert not unexpected, unexpected
        for text in self.expected:
            assert any(text in e for e in self.errors), f"expected a console error with {text!r}"


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    if not INSTALLED:
        message = f"{CHROMIUM} is missing: `make browser-tools` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def context(chromium: Browser) -> AsyncIterator[BrowserContext]:
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    await context.add_init_script(RECORD_CSP_VIOLATIONS)
    yield context
    await context.close()


@pytest.fixture
async def watched(context: BrowserContext) -> AsyncIterator[Watched]:
    watched = Watched(await context.new_page())
    yield watched
    await watched.check()


AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
  return result.violations.map((v) => `${v.id} (${v.impact}): ` +
    v.nodes.slice(0, 3).map((n) => n.target.join(" ") + ": " + n.failureSummary).join(" | "));
}"""


async def shot(page: Page, name: str) -> None:
    """Check the page with axe-core against WCAG 2.1 A and AA (contrast, labels, names,
    structure), and save it for the docs when asked to (``CONSOLE_SCREENSHOTS``)."""
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.evaluate(AXE)  # through the DevTools protocol: no CSP exception needed
    violations = await page.evaluate(RUN_AXE, WCAG)
    assert not violations, f"{name}: {violations}"
    directory = os.environ.get("CONSOLE_SCREENSHOTS")
    if directory:
        # Playwright creates the directory.
        await page.screenshot(path=os.path.join(directory, f"{name}.png"), full_page=True)


async def sign_in(page: Page, platform: Platform, token: str, path: str = "/models") -> None:
    await page.goto(platform.url + path)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Platform token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("Signed in as")).to_be_visible()


def reviewer(platform: Platform) -> str:
    return platform.token(Scope.READ, Scope.APPROVE, Scope.PROMOTE, Scope.WRITE, subject="ana")


async def test_sign_in_and_list_models(platform: Platform, watched: Watched) -> None:
    page = watched.page
    first = await platform.model("list-alpha", [0.9])
    second = await platform.model("list-beta", [0.88, 0.91])
    await page.goto(platform.url + "/models")
    await expect(page).to_have_url(f"{platform.url}/login?next=%2Fmodels")
    await shot(page, "sign-in")
    watched.expected.append("the server responded with a status of 400")  # the refused token
    await page.get_by_label("Platform token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not a platform token")
    await page.get_by_label("Platform token").fill(reviewer(platform))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{platform.url}/models")
    table = page.locator("#models-table")
    await expect(table.get_by_role("link", name=first)).to_be_visible()
    await expect(table.get_by_role("link", name=second)).to_be_visible()
    await shot(page, "models")

    # The filter answers as one types, without a page load (htmx swaps the table).
    await page.get_by_label("Name contains").fill(second)
    await expect(table.get_by_role("link", name=first)).to_have_count(0)
    await expect(table.get_by_role("link", name=second)).to_be_visible()
    await expect(page).to_have_url(f"{platform.url}/models?q={second}&tag=&alias=")
    await page.get_by_label("Name contains").fill("")
    await page.get_by_label("Alias set").fill("production")
    await page.get_by_label("Tag").fill("team=nobody")
    await expect(table).to_contain_text("No model matches")


async def test_open_a_model_and_compare_versions(platform: Platform, watched: Watched) -> None:
    page = watched.page
    name = await platform.model("compare", [0.86, 0.9])
    await sign_in(page, platform, reviewer(platform))
    await page.get_by_label("Name contains").fill(name)
    await page.locator("#models-table").get_by_role("link", name=name).click()
    await expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    versions = page.locator("table.versions tbody tr")
    await expect(versions).to_have_count(2)
    await expect(versions.first).to_contain_text("production")

    await page.get_by_label("Version", exact=True).select_option("1")
    await page.get_by_label("against").select_option("2")
    await page.get_by_role("button", name="Compare").click()
    comparison = page.locator("#comparison")
    await expect(comparison.locator("table.compare-metrics")).to_contain_text(
        "+0.04"
    )  # accuracy 0.86 -> 0.90
    gates = comparison.locator("table.compare-gates")
    await expect(gates).to_contain_text("+0.06")  # v1's margin over the 0.8 floor
    await expect(gates).to_contain_text("+0.1")  # v2's
    await expect(comparison).to_contain_text("Both were trained on exactly the same data")
    await shot(page, "model")

    await page.get_by_role("link", name="v2", exact=True).click()
    await expect(page.get_by_role("heading", name="Gate report")).to_be_visible()
    await expect(page.locator("table.gates")).to_contain_text("min_metric")
    await shot(page, "version")


async def test_approve_a_pending_version(platform: Platform, watched: Watched) -> None:
    page = watched.page
    name = await platform.model("approve", [0.9], policy=MANUAL)
    assert (await platform.admin.get_version(name, 1)).status == 2  # pending approval
    await sign_in(page, platform, reviewer(platform), f"/models/{name}/versions/1")
    await expect(page.locator("h1 .badge")).to_have_text("pending approval")
    await page.get_by_role("link", name="Approve", exact=True).click()
    await expect(page.get_by_role("heading", name=f"Approve {name} v1?")).to_be_visible()
    await page.get_by_label("Comment").fill("holdout and gates look right")
    await shot(page, "confirm")
    await page.get_by_role("button", name="Approve", exact=True).click()
    await expect(page.get_by_role("heading", name="Done: approve")).to_be_visible()
    recorded = page.locator("table.alias-history")
    await expect(recorded).to_contain_text("production")
    await expect(recorded).to_contain_text("ana")
    await expect(recorded).to_contain_text("approve")
    await shot(page, "approved")

    version = await platform.admin.get_version(name, 1)
    assert version.review.reviewer == "ana" and version.review.comment == "holdout and gates look right"
    assert (await platform.admin.get_model(name)).aliases["production"] == 1


async def test_the_audit_record_of_an_action_is_shown_to_an_admin(
    platform: Platform, watched: Watched
) -> None:
    page = watched.page
    name = await platform.model("audited", [0.9, 0.92])
    await sign_in(
        page, platform, platform.token(Scope.ADMIN, subject="root"), f"/models/{name}/versions/1/archive"
    )
    await page.get_by_label("Reason").fill("superseded by v2")
    await page.get_by_role("button", name="Archive").click()
    await expect(page.get_by_role("heading", name="Done: archive")).to_be_visible()
    audit = page.locator("table.audit")
    await expect(audit).to_contain_text("ArchiveVersion")
    await expect(audit).to_contain_text("root")
    await expect(audit).to_contain_text(f"models/{name}/versions/1")


async def test_roll_back_production(platform: Platform, watched: Watched) -> None:
    page = watched.page
    name = await platform.model("rollback", [0.88, 0.9])
    await sign_in(page, platform, reviewer(platform), f"/models/{name}")
    await page.get_by_role("link", name="Roll back production").click()
    await expect(page.locator(".confirm")).to_contain_text("moves back from v2 to v1")
    await page.get_by_label("Reason").fill("v2 misbehaves")
    await page.get_by_role("button", name="Rollback").click()
    await expect(page.get_by_role("heading", name="Done: rollback")).to_be_visible()
    await expect(page.locator(".done")).to_contain_text("moved back from v2 to v1")
    await expect(page.locator("table.alias-history")).to_contain_text("v2 misbehaves")
    assert (await platform.admin.get_model(name)).aliases["production"] == 1


async def test_the_drift_chart_follows_a_drift_while_the_page_is_open(
    platform: Platform, watched: Watched
) -> None:
    page = watched.page
    name = await platform.model("drift", [0.95])
    await platform.drift(name, 1, samples=600, error=0.05)
    await sign_in(page, platform, reviewer(platform))
    # The monitor watches the model once its first prediction arrives.
    deadline = time.monotonic() + WAIT_MS / 1000
    while platform.monitor.timeline.model(name) is None:
        assert time.monotonic() < deadline, "the monitor never watched the model"
        await page.wait_for_timeout(200)
    await page.goto(f"{platform.url}/monitoring/{name}")
    plot = page.locator("#quality-chart")
    await expect(plot).to_have_attribute("data-ready", "true")
    await expect(plot).to_have_attribute("data-events", "0")

    # The drift happens while the page stays open: the chart and the tables catch up.
    await platform.drift(name, 1, samples=1200, error=0.5)
    await expect(plot).not_to_have_attribute("data-events", "0")
    drifts = page.locator("table.drift-events")
    await expect(drifts).to_contain_text("concept")
    await expect(page.locator("table.features")).to_contain_text("training")
    await expect(page.locator("table.features tr", has_text="f1")).to_contain_text("drift")
    await expect(page.locator("table.episodes")).to_contain_text("waiting for a trainer")
    await shot(page, "monitoring")

    # Hover shows the values under the pointer; dragging zooms in, a double-click zooms out.
    over = plot.locator(".u-over")
    box = await over.bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    await expect(plot.locator(".u-legend .u-series").nth(1).locator(".u-value")).not_to_have_text("--")
    await page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + 20)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 20, steps=5)
    await page.mouse.up()
    await expect(plot).to_have_attribute("data-zoomed", "true")
    await over.dblclick()
    await expect(plot).to_have_attribute("data-zoomed", "false")


async def test_lineage_both_ways(platform: Platform, watched: Watched) -> None:
    page = watched.page
    name = await platform.model("lineage", [0.85, 0.88, 0.9])
    twin = await platform.model("lineage-twin", [0.8])  # another model, trained on the same rows
    await sign_in(page, platform, reviewer(platform), f"/models/{name}/versions/2/lineage")
    graph = page.locator("svg.lineage")
    await expect(graph.locator(".node-current")).to_contain_text(f"{name} v2")
    await expect(graph.locator(".node-data")).to_contain_text("orders")
    parent, child = (graph.locator(f"a[href='/models/{name}/versions/{v}/lineage']") for v in (1, 3))
    await expect(parent).not_to_have_count(0)
    await expect(child).not_to_have_count(0)
    # The data window also leads to the versions of any model trained on the same rows.
    await expect(graph.locator(".edge-same-data")).not_to_have_count(0)
    await expect(graph.locator(f"a[href='/models/{twin}/versions/1/lineage']")).to_have_count(1)
    await shot(page, "lineage")
    await child.first.click()  # down to the child
    await expect(page.get_by_role("heading", name=f"Lineage of {name} v3")).to_be_visible()
    await graph.locator(f"a[href='/models/{name}/versions/2/lineage']").first.click()  # and back up
    await expect(page.get_by_role("heading", name=f"Lineage of {name} v2")).to_be_visible()


async def test_submit_a_train_request_and_follow_the_job(platform: Platform, watched: Watched) -> None:
    page = watched.page
    name = await platform.model("train", [0.9])
    await sign_in(page, platform, reviewer(platform), f"/training/new?model={name}")
    await page.get_by_label("Window: events of the last").fill("7d")
    await page.get_by_role("button", name="Submit the train request").click()
    await expect(page.get_by_role("heading", name=f"Training {name}")).to_be_visible()
    await expect(page.locator("#job")).to_contain_text("queued")
    await expect(page.locator("#job")).to_contain_text("ana")
    request_id = page.url.rsplit("/", 1)[-1]

    # A trainer answers on the results topic; the open page follows.
    for status, progress in (
        (TrainStatus.TRAIN_STATUS_PROGRESS, 0.5),
        (TrainStatus.TRAIN_STATUS_REGISTERED, 1.0),
    ):
        result = TrainResult(request_id=request_id, model_name=name, status=status, progress=progress)
        if status == TrainStatus.TRAIN_STATUS_REGISTERED:
            result.version = 1
            result.metrics["accuracy"] = 0.9
        result.occurred_at.GetCurrentTime()
        await publish(
            platform.producer, [encode(platform.topics.train_results, result, source="/test", key=name)]
        )
        if status == TrainStatus.TRAIN_STATUS_PROGRESS:
            await expect(page.locator("#job progress").first).to_have_attribute("value", "0.5")
    await expect(page.locator("#job")).to_contain_text("registered")
    await expect(page.locator("#job").get_by_role("link", name=f"{name} v1")).to_be_visible()
    await page.goto(f"{platform.url}/training")
    await expect(page.locator("table.jobs")).to_contain_text(name)
    await shot(page, "training")


async def test_dataset_quality_shows_refusals_by_reason(platform: Platform, watched: Watched) -> None:
    page = watched.page
    dataset = "orders" + str(int(time.time() * 1000))[-6:]
    writer = platform.token(Scope.WRITE, Scope.READ, subject="data-owner")
    async with DatasetClient(f"127.0.0.1:{platform.ingest.grpc_port}", lambda: writer) as datasets:
        await datasets.register_schema(orders_schema(dataset, description="orders for the console test"))
    events = [
        {
            "event_id": f"e{i}",
            "customer": f"c{i}",
            "ts": "2026-11-26T10:00:00Z",
            "amount": 10 + i,
            "items": 1,
            "country": "FR",
            "label": "1",
        }
        for i in range(8)
    ]
    events += [
        {"event_id": "bad1", "customer": "c", "ts": "2026-11-26T10:00:00Z", "amount": 5000, "country": "FR"}
    ]
    events += [{"event_id": "bad2", "customer": "c", "ts": "2026-11-26T10:00:00Z", "country": "FR"}]
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"http://127.0.0.1:{platform.ingest.http_port}/v1/events",
            json=[{"dataset": dataset, **e} for e in events],
            headers={"authorization": f"Bearer {platform.token(Scope.INGEST)}"},
        )
    assert answer.json()["rejected"] == 2
    await sign_in(page, platform, reviewer(platform), "/datasets")
    await page.get_by_role("link", name=dataset).click()
    await expect(page.locator("table.schema")).to_contain_text("amount")
    refusals = page.locator("table.refusals")
    await expect(refusals).to_contain_text("out_of_range")
    await expect(refusals).to_contain_text("missing_field")
    await expect(page.locator("#ingest-chart")).to_have_attribute("data-ready", "true")
    await page.get_by_label("Over the last").select_option("1h")
    await page.get_by_role("button", name="Show").first.click()
    await expect(page).to_have_url(f"{platform.url}/datasets/{dataset}?version=1&range=1h")
    await expect(refusals).to_contain_text("out_of_range")
    await shot(page, "dataset")


async def test_a_read_only_person_is_offered_no_changes(platform: Platform, watched: Watched) -> None:
    page = watched.page
    name = await platform.model("readonly", [0.9], policy=MANUAL)
    await sign_in(page, platform, platform.token(Scope.READ, subject="rita"), f"/models/{name}/versions/1")
    await expect(page.get_by_role("heading", name="Gate report")).to_be_visible()
    await expect(page.get_by_role("link", name="Approve", exact=True)).to_have_count(0)
    await expect(page.get_by_role("link", name="Reject", exact=True)).to_have_count(0)
    await page.goto(f"{platform.url}/models/{name}")
    await expect(page.get_by_text("The audit log needs a token with the admin scope")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_contain_text("You are signed out")
