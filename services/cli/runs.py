"""``mlops runs``: training runs, every trainer job (failed ones included) with the search
trials it ran, as the registry records them from the trainer's results.

Talks to the registry's gRPC API (``mlops.v1.RunService``; ``MLOPS_REGISTRY_ADDRESS``,
else the local stack's) with ``MLOPS_TOKEN`` (read scope).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.context import call_service
from services.cli.models import format_time, gates_table, headline_metrics, message_json
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json
from services.common.clients.runs import RunClient
from services.common.proto.mlops.v1 import events_pb2, runs_pb2

app = typer.Typer(
    help="Training runs: every trainer job, failed ones included, with its search trials.",
    no_args_is_help=True,
)

T = TypeVar("T")
STATES = {
    name.removeprefix("RUN_STATE_").lower(): value
    for name, value in runs_pb2.RunState.items()
    if value != runs_pb2.RUN_STATE_UNSPECIFIED
}


def call_runs(
    address: str | None, token: str | None, what: str, call: Callable[[RunClient], Awaitable[T]]
) -> T:
    return call_service(RunClient, "registry_grpc", address, token, what, call)


def state_name(state: int) -> str:
    return runs_pb2.RunState.Name(state).removeprefix("RUN_STATE_").lower()  # type: ignore[arg-type]


def trigger_name(trigger: int) -> str:
    return events_pb2.TrainTrigger.Name(trigger).removeprefix("TRAIN_TRIGGER_").lower()  # type: ignore[arg-type]


@app.command("list")
def list_runs(
    model: Annotated[str, typer.Option("--model", "-m", help="Only this model's runs.")] = "",
    state: Annotated[str, typer.Option(help=f"Only runs in this state: {', '.join(STATES)}.")] = "",
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Training runs, newest first ([bold]read[/] scope)."""
    if state and state not in STATES:
        fail(f"--state: one of {', '.join(STATES)}", ExitCode.USAGE)
    wanted = STATES.get(state, runs_pb2.RUN_STATE_UNSPECIFIED)
    runs = call_runs(address, token, "list runs", lambda c: c.list_runs(model, state=wanted, limit=limit))
    if json_output:
        print_json([message_json(r) for r in runs])
        return
    table = Table(
        "run", "model", "state", "trigger", "family", "version", "trials", "started", "seconds", "error"
    )
    for run in runs:
        table.add_row(
            Text(run.run_id),
            Text(run.model_name),
            state_name(run.state),
            trigger_name(run.trigger),
            run.family,
            str(run.version or ""),
            str(len(run.trials) or ""),
            format_time(run.started_at),
            f"{run.duration_seconds:.1f}" if run.finished_at.seconds else "",
            Text(run.error[:80]),
            style="bold red" if run.state == runs_pb2.RUN_STATE_FAILED else None,
        )
    console.print(table)


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id: a train request id.")],
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """One run: what asked for it, how it ended, its gates and every search trial ([bold]read[/] scope)."""
    run = call_runs(address, token, f"show run {run_id}", lambda c: c.get_run(run_id))
    if json_output:
        print_json(message_json(run))
        return
    console.print(
        f"[bold]run {run.run_id}[/]  {run.model_name}  {state_name(run.state)}"
        + (f"  version {run.version}" if run.version else ""),
        highlight=False,
    )
    console.print(
        f"trigger {trigger_name(run.trigger)}  by {run.requested_by or '-'}  dataset {run.dataset or '-'}  "
        f"started {format_time(run.started_at)}"
        + (
            f"  took {run.duration_seconds:.1f}s"
            if run.finished_at.seconds
            else f"  progress {run.progress:.0%}"
        ),
        highlight=False,
        markup=False,
    )
    if run.family:
        console.print(f"chosen: {run.family} {run.params_json}", highlight=False, markup=False)
    if run.metrics:
        console.print(f"metrics: {headline_metrics(run.metrics)}", highlight=False, markup=False)
    if run.error:
        console.print(Text.assemble(("error: ", "bold red"), run.error))
    if run.gates:
        console.print(gates_table(run.gates, f"gates of run {run.run_id}"))
    if run.coalesced_request_ids:
        console.print(f"also answered: {', '.join(run.coalesced_request_ids)}", highlight=False, markup=False)
    if not run.trials:
        return
    trials = Table(
        "#", "family", "rung", "rows", "score", "seconds", "params", "error", title="search trials"
    )
    for trial in run.trials:
        trials.add_row(
            str(trial.configuration),
            trial.family,
            str(trial.rung),
            str(trial.rows),
            f"{trial.score:.4f}" if trial.HasField("score") else "failed",
            f"{trial.seconds:.2f}",
            Text(trial.params_json),
            Text(trial.error),
        )
    console.print(trials)
