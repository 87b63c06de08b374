"""``mlops up``, ``mlops down``, ``mlops status``: the local stack's lifecycle."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from services.cli.context import STACK_DIR_ENV, stack_dir
from services.cli.output import ExitCode, JsonOutput, console, err_console, fail, print_json
from services.cli.stack import (
    ALL_SERVICES,
    INFRA,
    RECORDS_LOST,
    SERVICES,
    LocalStack,
    StackError,
    check_component,
)
from services.cli.stack_state import STATE_FILE, StackPorts, StackState, pid_alive, running_stack

WorkdirOption = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        help=f"The stack's directory: database files, logs, {STATE_FILE}. [env: {STACK_DIR_ENV}; default: .mlops]",
        show_default=False,
    ),
]
PortOption = Annotated[
    list[str] | None,
    typer.Option(
        "--port",
        metavar="NAME=PORT",
        help="Move one port, e.g. [bold]--port serving_grpc=9001[/] (repeatable). "
        f"Names: {', '.join(StackPorts.defaults().as_dict())}.",
    ),
]


def _parse_ports(base: StackPorts, values: list[str] | None) -> StackPorts:
    overrides: dict[str, int] = {}
    for value in values or []:
        name, sep, port = value.partition("=")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            fail(f"--port {value!r}: expected NAME=PORT with PORT in 1..65535", ExitCode.USAGE)
        overrides[name.strip()] = int(port)
    try:
        return base.replace(overrides)
    except ValueError as exc:
        fail(f"--port: {exc}", ExitCode.USAGE)


def _parse_services(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in SERVICES]
    if unknown:
        fail(f"--services: unknown {', '.join(unknown)}; known: {', '.join(ALL_SERVICES)}", ExitCode.USAGE)
    return names


def up(
    workdir: WorkdirOption = None,
    port: PortOption = None,
    free_ports: Annotated[
        bool,
        typer.Option("--free-ports", help="Listen on free ports instead of the defaults (see stack.json)."),
    ] = False,
    services: Annotated[
        str,
        typer.Option(
            "--services",
            envvar="MLOPS_STACK_SERVICES",
            help="Comma-separated services to run; empty for infra only.",
        ),
    ] = ",".join(ALL_SERVICES),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for everything to become healthy.")] = 120.0,
    restart: Annotated[
        bool, typer.Option(help="Start a component that dies again, with backoff (1 s doubling to 30 s).")
    ] = True,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve every gRPC and HTTP endpoint with TLS only, with a private CA made in <workdir>/tls/.",
        ),
    ] = False,
    persistent_broker: Annotated[
        bool,
        typer.Option(
            "--persistent-broker",
            help="Keep the broker's records, groups and offsets on disk in <workdir>/kafka-store/ "
            "(an S3 store, SeaweedFS), so a broker restart loses nothing: slower than memory.",
        ),
    ] = False,
    json_output: JsonOutput = False,
) -> None:
    """Run the whole platform on this machine until Ctrl-C.

    Starts a Kafka-protocol broker and a MongoDB server (both embedded, from wheels),
    creates the topics, then runs every service as its own process.

    Prints the endpoints and an admin access token, and writes them to
    [bold]<workdir>/stack.json[/] (readable by you only), where [bold]mlops status[/],
    [bold]mlops down[/] and the other commands find them. Logs: [bold]<workdir>/logs/<name>.log[/].

    Examples:

      mlops up                                 # default ports, e.g. serving gRPC on 127.0.0.1:8001

      mlops up --port serving_grpc=9001        # move one port

      mlops up --free-ports --services registry,serving

      mlops up --tls                           # TLS everywhere; the CA's path is in stack.json ("ca")

      mlops up --persistent-broker             # the broker keeps its records across restarts
    """
    directory = workdir or stack_dir()
    existing = running_stack(directory)
    if existing is not None:
        fail(f"a stack is already running from {directory} (pid {existing.pid}); `mlops down` first")
    ports = _parse_ports(StackPorts.free() if free_ports else StackPorts.defaults(), port)
    stack = LocalStack(
        directory, ports, services=_parse_services(services), tls=tls, persistent_broker=persistent_broker
    )
    state_path = directory / STATE_FILE
    with signals_as_exit():
        try:
            if not json_output:
                with console.status("starting the local stack..."):
                    stack.start(timeout=timeout)
            else:
                stack.start(timeout=timeout)
            state = stack.state()
            state.save(state_path)
            _announce(state, state_path, json_output)
            _supervise(stack, state_path, restart)
        except StackError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            pass
        finally:
            # A second Ctrl-C must not cut the shutdown short and leave children behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.stop()
            with contextlib.suppress(FileNotFoundError):
                if StackState.load(state_path).pid == os.getpid():
                    state_path.unlink()
    if not json_output:
        console.print("local stack stopped")


def _announce(state: StackState, state_path: Path, json_output: bool) -> None:
    if json_output:
        print_json({"event": "ready", "state_file": str(state_path), **_public_state(state)})
        return
    table = Table(title="mlops local stack", show_lines=False)
    table.add_column("component")
    table.add_column("endpoint")
    table.add_column("pid", justify="right")
    ports = state.ports
    rows = [("kafka", f"127.0.0.1:{ports.kafka}"), ("mongodb", f"mongodb://127.0.0.1:{ports.mongodb}")]
    scheme = "https" if state.ca else "http"
    for name in state.services:
        spec = SERVICES[name]
        grpc = (
            f"grpc{'s' if state.ca else ''} 127.0.0.1:{getattr(ports, spec.grpc_port)}  "
            if spec.grpc_port
            else ""
        )
        rows.append((name, f"{grpc}{scheme}://127.0.0.1:{getattr(ports, spec.http_port)}"))
    for name, endpoint in rows:
        table.add_row(name, endpoint, str(state.pids.get(name, "")))
    console.print(table)
    if "console" in state.services:
        console.print(
            f"console: [bold]{scheme}://127.0.0.1:{ports.console_http}[/] (sign in with the token below)",
            highlight=False,
        )
    token = state.admin_token()
    console.print(
        f"access token (admin, valid an hour; `mlops` commands mint new ones): [bold]{token}[/]",
        soft_wrap=True,
    )
    console.print(f"  export MLOPS_TOKEN={token}", soft_wrap=True, highlight=False)
    if state.ca:
        console.print(f"TLS only; the stack's CA: {state.ca}", highlight=False)
        console.print(f"  curl --cacert {state.ca} {scheme}://127.0.0.1:{ports.serving_http}/v2/health/ready")
    console.print(f"state: {state_path}   logs: {Path(state.workdir) / 'logs'}")
    console.print("Ctrl-C (or `mlops down`) stops everything.")


def _public_state(state: StackState) -> dict[str, object]:
    return {
        "pid": state.pid,
        "ports": state.ports.as_dict(),
        "pids": state.pids,
        "services": state.services,
        "token": state.admin_token(),
        "topic_prefix": state.topic_prefix,
        "started_at": state.started_at,
        "workdir": state.workdir,
        "ca": state.ca,
    }


RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0


def _supervise(stack: LocalStack, state_path: Path, restart: bool) -> None:
    """Until a signal: report any component that dies and, with ``restart``, start it again
    with exponential backoff (1 s, 2 s ... 30 s; reset once it has run for a minute), as
    docker-compose's ``restart: unless-stopped`` would. The state file follows new pids."""
    failures: dict[str, int] = {}
    retry_at: dict[str, float] = {}
    started_at: dict[str, float] = {}
    while True:
        now = time.monotonic()
        for name, process in list(stack.processes.items()):
            if process.alive():
                if name in started_at and now - started_at[name] > STABLE_AFTER:
                    failures.pop(name, None)
                    started_at.pop(name)
                continue
            if name not in retry_at:
                failures[name] = failures.get(name, 0) + 1
                retry_at[name] = now + min(RESTART_BACKOFF_MAX, 2.0 ** (failures[name] - 1))
                err_console.print(
                    Text.assemble(
                        (f"{name} exited", "bold red"),
                        f" with code {process.popen.returncode}; log: {process.log_path}\n{process.log_tail(10)}",
                    )
                )
            if not restart or now < retry_at[name]:
                continue
            try:
                stack.restart(name)
            except StackError as exc:
                failures[name] += 1
                retry_at[name] = time.monotonic() + min(RESTART_BACKOFF_MAX, 2.0 ** (failures[name] - 1))
                err_console.print(Text(f"{name} restart failed: {exc}", style="red"))
                continue
            retry_at.pop(name)
            started_at[name] = time.monotonic()
            stack.state().save(state_path)
            err_console.print(Text(f"{name} restarted (pid {stack.processes[name].pid})", style="green"))
            if name == "kafka" and not stack.persistent_broker:
                err_console.print(Text(RECORDS_LOST, style="yellow"))
        time.sleep(0.5)


def down(
    workdir: WorkdirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack to stop.")] = 30.0,
    json_output: JsonOutput = False,
) -> None:
    """Stop the local stack that [bold]mlops up[/] runs.

    Its services stop first, then the broker and the database. Nothing running is not an error.
    """
    directory = workdir or stack_dir()
    state_path = directory / STATE_FILE
    state = running_stack(directory)
    if state is None:
        with contextlib.suppress(FileNotFoundError):
            state_path.unlink()
        if json_output:
            print_json({"stopped": False, "reason": "no running stack"})
        else:
            console.print(f"no local stack running from {directory}")
        return
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid):
        if time.monotonic() > deadline:
            fail(f"stack supervisor {state.pid} still running after {timeout:.0f}s", ExitCode.FAILED)
        time.sleep(0.1)
    left = sorted(name for name, pid in state.pids.items() if pid_alive(pid))
    if json_output:
        print_json({"stopped": True, "pid": state.pid, "left_running": left})
    else:
        console.print(f"local stack (pid {state.pid}) stopped")
    if left:
        fail(f"still running after the stack stopped: {', '.join(left)}")


def status(
    workdir: WorkdirOption = None,
    port: PortOption = None,
    host: Annotated[str, typer.Option(help="Host the components listen on.")] = "127.0.0.1",
    json_output: JsonOutput = False,
) -> None:
    """Check the health of every component.

    Kafka: a metadata round trip; MongoDB: a ping; registry, ingest, serving: the gRPC
    health protocol; every service: /health/ready, which names a consumer that is not
    consuming and why. Notes of the running stack (records lost when its broker restarted)
    follow the table.

    Uses the running local stack's ports when there is one, otherwise the defaults;
    [bold]--port[/] overrides either. Exit code 0 only when every component is healthy.
    """
    state = running_stack(workdir or stack_dir())
    ports = _parse_ports(state.ports if state else StackPorts.defaults(), port)
    components = [*INFRA, *(state.services if state else ALL_SERVICES)]
    ca = Path(state.ca) if state and state.ca else None
    results = [check_component(name, ports, host=host, ca=ca) for name in components]
    healthy = all(r.healthy for r in results)
    if json_output:
        print_json(
            {
                "healthy": healthy,
                "stack_pid": state.pid if state else None,
                "notes": state.notes if state else [],
                "components": [
                    {"name": r.component, "endpoint": r.endpoint, "healthy": r.healthy, "detail": r.detail}
                    for r in results
                ],
            }
        )
    else:
        table = Table(title="mlops status" + (f" (local stack, pid {state.pid})" if state else ""))
        for column in ("component", "endpoint", "health", "detail"):
            table.add_column(column)
        for r in results:
            mark = "[green]healthy[/]" if r.healthy else "[red]unhealthy[/]"
            table.add_row(r.component, r.endpoint, mark, r.detail)
        console.print(table)
        for note in state.notes if state else []:
            console.print(Text(note, style="yellow"))
    if not healthy:
        raise typer.Exit(int(ExitCode.FAILED))


@contextlib.contextmanager
def signals_as_exit(signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Turn ``signals`` into :class:`KeyboardInterrupt` in the main thread, so ``try/finally``
    blocks clean up whichever signal stops the process."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous: dict[int, Callable[..., Any] | int | None] = {}
    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
