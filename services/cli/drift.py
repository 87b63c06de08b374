"""``mlops drift``: drift detection and live model quality, from the monitor.

Reads the monitor's ``/v1/status`` (``MLOPS_MONITOR_URL``, else the local stack's monitor,
else http://127.0.0.1:8082) with ``MLOPS_TOKEN`` (or the local stack's token); the token
needs the ``read`` scope. Several monitor processes each watch a share of the models:
pass ``--url`` once per process and their reports are merged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.table import Table

from services.cli.context import resolve_token, stack_ports
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json

app = typer.Typer(help="Drift detection and live model quality.", no_args_is_help=True)

Urls = Annotated[
    list[str] | None,
    typer.Option(
        "--url",
        envvar="MLOPS_MONITOR_URL",
        show_envvar=True,
        help="A monitor's HTTP address (repeatable: one per monitor process).",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(envvar="MLOPS_TOKEN", show_envvar=True, help="Bearer token with the read scope."),
]


def _fetch(url: str, path: str, token: str) -> dict[str, Any] | None:
    """One monitor's answer; None when it watches no such model."""
    try:
        response = httpx.get(
            f"{url.rstrip('/')}{path}", headers={"authorization": f"Bearer {token}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        fail(f"monitor at {url} unreachable: {exc}", ExitCode.UNAVAILABLE)
    if response.status_code in (401, 403):
        fail(f"monitor at {url} refused the token: {_detail(response)}", ExitCode.DENIED)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        fail(f"monitor at {url} answered {response.status_code}: {_detail(response)}")
    return dict(response.json())


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _versions_table(models: list[dict[str, Any]]) -> Table:
    table = Table(title="Live quality", title_justify="left")
    for column in (
        "model",
        "version",
        "live",
        "predictions",
        "labelled",
        "accuracy / MAE",
        "concept",
        "drifts",
    ):
        table.add_column(
            column, justify="right" if column in ("predictions", "labelled", "drifts") else "left"
        )
    for model in models:
        for v in model["versions"]:
            detector = v["detector"]
            quality = v["accuracy"] if v["accuracy"] is not None else v["mean_absolute_error"]
            state = detector["state"]
            table.add_row(
                model["model"],
                str(v["version"]),
                "yes" if model["live_version"] == v["version"] else "",
                str(v["predictions"]),
                str(v["labelled"]),
                _ratio(quality),
                f"[red]{state}[/red]" if state == "drift" else state,
                str(detector["drifts"]),
            )
    return table


HOLDS = {
    "min_samples": "too few labelled samples",
    "cooldown": "the cooldown",
    "requested": "a retrain under way",
    "candidate_failed": "a candidate that failed",
    "attempt_limit": "the attempt limit",
}
"""What holds a retrain back, in words (the monitor's ``retrain.hold.reason``)."""


def _hold_line(name: str, hold: dict[str, Any]) -> str:
    until = hold["until"]
    end = f"until {_when(until)}" if until is not None else "until enough labelled samples arrive"
    return f"{name}: retrain held back by {HOLDS.get(hold['reason'], hold['reason'])} {end}: {hold['detail']}"


def _drift_lines(models: list[dict[str, Any]]) -> list[str]:
    lines = []
    for model in models:
        name = model["model"]
        episode = model["episode"]
        if episode:
            asked = episode["retrain_requested_at"]
            lines.append(
                f"{name}: drift episode on version {episode['version']} since {_when(episode['onset_time'])} "
                f"({episode['samples_since_onset']} labelled samples since); "
                + (f"retrain requested at {_when(asked)}" if asked else "retrain not requested yet")
            )
        hold = (model.get("retrain") or {}).get("hold")
        if hold:
            lines.append(_hold_line(name, hold))
        for v in model["versions"]:
            last = v["last_drift"]
            if last:
                lines.append(
                    f"{name} v{v['version']}: error rate {last['reference_statistic']:.3f} -> "
                    f"{last['statistic']:.3f} at sample {last['sample_index']}, onset {_when(last['onset_time'])}"
                )
            drifting = [f for f, s in v.get("features", {}).items() if s["state"] == "drift"]
            outputs = [o for o, s in v.get("outputs", {}).items() if s["state"] == "drift"]
            if drifting:
                lines.append(f"{name} v{v['version']}: input drift in {', '.join(sorted(drifting))}")
            if outputs:
                lines.append(f"{name} v{v['version']}: prediction drift in {', '.join(sorted(outputs))}")
        for c in model.get("shadow_comparison", []):
            if "accuracy" in c:
                lines.append(
                    f"{name}: v{c['version']} vs live v{c['against']} on {c['samples']} shared requests: "
                    f"accuracy {c['accuracy']:.3f} vs {c['live_accuracy']:.3f}"
                )
            else:
                lines.append(
                    f"{name}: v{c['version']} vs live v{c['against']} on {c['samples']} shared requests: "
                    f"MAE {c['mean_absolute_error']:.3f} vs {c['live_mean_absolute_error']:.3f}"
                )
    return lines


@app.command()
def status(
    model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    url: Urls = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Accuracy, detectors, drift episodes and shadow comparisons of every watched model."""
    urls = url or [f"http://127.0.0.1:{stack_ports().monitor_http}"]
    bearer = resolve_token(token)
    models: list[dict[str, Any]] = []
    monitors = []
    for address in urls:
        if model is None:
            answer = _fetch(address, "/v1/status", bearer) or {}
            models += answer.get("models", [])
            monitors.append({"url": address, "assignment": answer.get("assignment", {})})
        else:
            one = _fetch(address, f"/v1/status/{quote(model, safe='')}", bearer)
            if one is not None:
                models.append(one)
            monitors.append({"url": address})
    if model is not None and not models:
        fail(f"model {model!r} is not watched by any monitor asked ({', '.join(urls)})", ExitCode.NOT_FOUND)
    models.sort(key=lambda m: m["model"])
    if json_output:
        print_json({"models": models, "monitors": monitors})
        return
    if not models:
        console.print("No model watched yet: the monitor has seen no prediction.")
        return
    console.print(_versions_table(models))
    for line in _drift_lines(models):
        console.print(line, highlight=False, markup=False)
