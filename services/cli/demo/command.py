"""``mlops demo``: the command, on the running local stack or on one of its own."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.cli.demo.report import DemoReport, summary_table
from services.cli.demo.scenario import ClosedLoopDemo, DemoConfig, Endpoints
from services.cli.demo.watcher import DemoFailed
from services.cli.stack import HOST, LocalStack, StackError
from services.cli.stack_state import StackPorts, running_stack
from services.common.clients.registry import MODEL_NAME
from services.common.errors import PlatformError
from services.common.localstack import port_open

DEFAULT_WORKDIR = Path(".mlops")


def endpoints_of(stack: LocalStack) -> Endpoints:
    return Endpoints(
        kafka_bootstrap=stack.kafka_bootstrap,
        registry_address=stack.grpc_address("registry"),
        datasets_address=stack.grpc_address("ingest"),
        serving_address=stack.grpc_address("serving"),
        monitor_url=stack.http_url("monitor"),
        token=stack.admin_token,
        topic_prefix=stack.topic_prefix,
        ca=str(stack.ca or ""),
    )


def _model_name(value: str | None) -> str | None:
    if value is not None and not MODEL_NAME.fullmatch(value):
        raise typer.BadParameter(
            "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128"
        )
    return value


def demo(
    report_path: Annotated[
        Path, typer.Option("--report", help="Where to write the figures as JSON.")
    ] = DEFAULT_WORKDIR / "demo-report.json",
    workdir: Annotated[
        Path, typer.Option(help="Where `mlops up` keeps its state; a stack running from here is used.")
    ] = DEFAULT_WORKDIR,
    rate: Annotated[float, typer.Option(help="Samples per second sent through the platform.")] = 400.0,
    model: Annotated[
        str | None,
        typer.Option(
            help="The model to train and retrain. Default: a fresh name each run "
            "(demo-classifier-<run>), so no earlier run's retrain cooldown stands in the way.",
            callback=_model_name,
        ),
    ] = None,
    family: Annotated[
        str,
        typer.Option(
            help="Train this estimator family (xgboost, lightgbm ...) instead of the default search."
        ),
    ] = "",
    federated: Annotated[
        bool,
        typer.Option(
            "--federated",
            help="Instead: three sites train one model with Flower (SecAgg+, differential privacy); "
            "the report goes to .mlops/federated-report.json unless --report says otherwise.",
        ),
    ] = False,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Start its own stack with TLS on every endpoint (as `mlops up --tls`)."),
    ] = False,
) -> None:
    """Run the closed loop: train, serve, drift, detect, retrain, swap, and report.

    Uses the stack `mlops up` is running (the new model then stays in production), or starts
    a stack of its own for the run and stops it afterwards. Exits 0 only if the loop closed:
    a new version in production that does clearly better than the drifted old one.
    """
    console = Console(stderr=True)
    if federated:
        # Imported here: it loads scikit-learn, which no other command needs at start-up.
        from services.cli.federated import federated_demo

        explicit = report_path != DEFAULT_WORKDIR / "demo-report.json"
        federated_demo(workdir, report_path if explicit else None, console)
        return
    config = DemoConfig(rate=rate, family=family)
    state = running_stack(workdir)
    if state is not None:
        endpoints = Endpoints(
            kafka_bootstrap=f"{HOST}:{state.ports.kafka}",
            registry_address=f"{HOST}:{state.ports.registry_grpc}",
            datasets_address=f"{HOST}:{state.ports.ingest_grpc}",
            serving_address=f"{HOST}:{state.ports.serving_grpc}",
            monitor_url=f"{'https' if state.ca else 'http'}://{HOST}:{state.ports.monitor_http}",
            token=state.admin_token(),
            topic_prefix=state.topic_prefix,
            ca=state.ca,
        )
        console.log(f"using the local stack running since {state.started_at} (pid {state.pid})")
        if "console" in state.services:
            scheme = "https" if state.ca else "http"
            console.log(f"watch it in the console: {scheme}://{HOST}:{state.ports.console_http}")
        report = _run(endpoints, config, console, model)
    else:
        defaults = StackPorts.defaults()
        ports = defaults if not any(port_open(p) for p in defaults.as_dict().values()) else StackPorts.free()
        with tempfile.TemporaryDirectory(prefix="mlops-demo-") as tmp:
            stack = LocalStack(Path(tmp), ports, tls=tls)
            console.log(
                "starting a local stack for the demo (broker, database, the services and the console)"
            )
            try:
                stack.start(timeout=90)
            except StackError as exc:
                console.print(f"[red]the local stack did not start:[/] {exc}")
                raise typer.Exit(3) from None
            console.log(f"watch it in the console: {stack.http_url('console')} (token: {stack.admin_token})")
            try:
                report = _run(endpoints_of(stack), config, console, model)
            finally:
                stack.stop()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.to_json() + "\n")
    console.print(summary_table(report))
    console.print(f"report written to {report_path}")
    if not report.loop_closed:
        raise typer.Exit(1)


def _run(endpoints: Endpoints, config: DemoConfig, console: Console, model: str | None) -> DemoReport:
    scenario = ClosedLoopDemo(endpoints, config, console, model=model)
    try:
        return asyncio.run(scenario.run())
    except (DemoFailed, PlatformError) as exc:
        scenario.report.verdict = str(exc)
        console.print(f"[red]demo failed:[/] {exc}")
        return scenario.report
