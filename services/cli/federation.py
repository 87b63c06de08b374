"""``mlops federation``: federated training with Flower, run from its own environment.

Flower's pins conflict with the platform's environment, so the federation service and
the site agent run from ``.venv-federation`` (``make federation-venv``; another location
with ``MLOPS_FEDERATION_PYTHON``) as processes of their own; these commands start them
and read what they leave behind. See docs/federation.md.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.cli.context import local_stack, resolve_token
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json
from services.common.auth import Scope
from services.federation.status import RunStatus, read_status

app = typer.Typer(
    help="Federated training: the federation service, its runs, the site agent.", no_args_is_help=True
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKDIR = Path(".mlops/federation")
FEDERATION_TOKEN_TTL_SECONDS = 7 * 86400
"""The local stack's token for the federation service: as long as the registry gives by default."""


def federation_python() -> Path:
    """The federation environment's interpreter; a usage error naming the fix when absent."""
    explicit = os.environ.get("MLOPS_FEDERATION_PYTHON")
    candidates = [Path(explicit)] if explicit else [REPO_ROOT / ".venv-federation" / "bin" / "python"]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    fail(
        f"no federation environment at {candidates[0]}: run `make federation-venv` "
        "(or point MLOPS_FEDERATION_PYTHON at one)",
        ExitCode.USAGE,
    )


def federation_env(
    *,
    workdir: Path,
    port: int,
    registry_url: str,
    token: str,
    kafka: str,
    topic_prefix: str,
    certificates: Path | None,
) -> dict[str, str]:
    """The federation service's environment (its settings are ``FEDERATION_*``)."""
    env = dict(os.environ)
    env.update(
        {
            "FEDERATION_WORKDIR": str(workdir),
            "FEDERATION_PORT": str(port),
            "FEDERATION_REGISTRY_URL": registry_url,
            "FEDERATION_TOKEN": token,
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MLOPS_TOPIC_PREFIX": topic_prefix,
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        }
    )
    if certificates is None:
        env["FEDERATION_INSECURE"] = "true"
    else:
        env.update(
            {
                "FEDERATION_SSL_CERTFILE": str(certificates / "superlink.pem"),
                "FEDERATION_SSL_KEYFILE": str(certificates / "superlink.key"),
                "FEDERATION_SSL_CA_CERTFILE": str(certificates / "ca.pem"),
            }
        )
    return env


@app.command()
def start(
    spec: Annotated[
        Path, typer.Option("--spec", exists=True, dir_okay=False, help="The federation spec (YAML).")
    ],
    workdir: Annotated[
        Path, typer.Option(help="Where runs keep their status and results.")
    ] = DEFAULT_WORKDIR,
    port: Annotated[int, typer.Option(help="The SuperLink's port (sites connect here).")] = 8084,
    registry_url: Annotated[
        str | None, typer.Option(envvar="MLOPS_REGISTRY_URL", help="The registry's REST API.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FEDERATION_TOKEN",
            help="Registry token with read and write (else one for the local stack).",
        ),
    ] = None,
    certificates: Annotated[
        Path | None,
        typer.Option(
            help="Directory with ca.pem, superlink.pem, superlink.key (`mlops federation certificates`)."
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS between sites and the SuperLink.")
    ] = False,
    once: Annotated[bool, typer.Option("--once", help="Run one federation, register it, and exit.")] = False,
) -> None:
    """Start the federation service for SPEC's model: a first run now, then train requests.

    Without --once it keeps answering the platform's train requests for the model (a
    drift's retrain included) until Ctrl-C.
    """
    if certificates is None and not insecure:
        fail("give --certificates (see `mlops federation certificates`) or --insecure", ExitCode.USAGE)
    state = local_stack()
    if registry_url is None:
        registry_url = f"http://127.0.0.1:{state.ports.registry_http if state else 8080}"
    if token is None and state is not None:
        # Signed with the stack's key as the registry would issue it (service credentials
        # are the back-end services' own): it lasts as long as the registry's default.
        token = state.mint("federation", [Scope.READ, Scope.WRITE], ttl_seconds=FEDERATION_TOKEN_TTL_SECONDS)
    token = token or resolve_token(None)
    kafka = (
        f"127.0.0.1:{state.ports.kafka}"
        if state
        else os.environ.get("MLOPS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    env = federation_env(
        workdir=workdir.resolve(),
        port=port,
        registry_url=registry_url,
        token=token,
        kafka=kafka,
        topic_prefix=state.topic_prefix if state else os.environ.get("MLOPS_TOPIC_PREFIX", "mlops"),
        certificates=certificates.resolve() if certificates else None,
    )
    command = [str(federation_python()), "-m", "services.federation", "serve", "--spec", str(spec.resolve())]
    if once:
        command.append("--once")
    # In the foreground: Ctrl-C reaches the service too, which stops its SuperLink.
    raise typer.Exit(subprocess.run(command, env=env, check=False).returncode)


@app.command()
def certificates(
    directory: Annotated[
        Path, typer.Argument(help="Where to write ca.pem, superlink.pem and superlink.key.")
    ],
    host: Annotated[
        list[str] | None, typer.Option(help="IP address or DNS name of the SuperLink (repeatable).")
    ] = None,
) -> None:
    """A throwaway CA and SuperLink certificate, for a federation on one machine or a trial."""
    command = [str(federation_python()), "-m", "services.federation", "certificates", "--dir", str(directory)]
    for name in host or []:
        command += ["--host", name]
    raise typer.Exit(subprocess.run(command, check=False).returncode)


def latest_run(workdir: Path) -> Path | None:
    runs = sorted((workdir / "runs").glob("*/status.json"))
    return runs[-1].parent if runs else None


@app.command()
def status(
    workdir: Annotated[Path, typer.Option(help="The federation service's directory.")] = DEFAULT_WORKDIR,
    run: Annotated[Path | None, typer.Option(help="A run's directory (default: the latest run).")] = None,
    json_output: JsonOutput = False,
) -> None:
    """Rounds and sites of a federation run: who trained, who dropped, who was refused and why."""
    directory = run or latest_run(workdir)
    found = read_status(directory) if directory else None
    if found is None:
        fail(f"no federation run under {workdir}", ExitCode.NOT_FOUND)
    if json_output:
        print_json({"run_dir": str(directory), **found.to_dict()})
        return
    _print_status(found, directory)


def _print_status(found: RunStatus, directory: Path | None) -> None:
    started = datetime.fromtimestamp(found.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    budget = f", epsilon {found.epsilon:.2f} at delta {found.delta:g}" if found.delta else ""
    console.print(
        f"[bold]{found.model_name}[/]: {found.state} ({found.strategy}, "
        f"{'SecAgg+' if found.secure_aggregation else 'no secure aggregation'}{budget}), started {started} UTC"
    )
    if found.error:
        console.print(f"[red]error:[/] {found.error}")
    sites = Table("site", "role", "train rows", "eval rows", "refused", title="sites")
    for site in sorted(found.sites.values(), key=lambda s: s.name):
        sites.add_row(site.name, site.role, str(site.train_rows), str(site.eval_rows), site.refused or "-")
    console.print(sites)
    rounds = Table(
        "round", "applied", "aggregated", "dropped", "refused", "noise std", "epsilon", title="rounds"
    )
    for r in found.rounds:
        refused = "; ".join(f"{name}: {why}" for name, why in r.refused.items()) or "-"
        rounds.add_row(
            str(r.number),
            "yes" if r.applied else "no",
            ", ".join(r.aggregated) or "-",
            ", ".join(r.dropped) or "-",
            refused,
            f"{r.noise_std:.4f}",
            f"{r.epsilon:.2f}",
        )
    console.print(rounds)
    if found.evaluation.get("sites"):
        console.print(
            "final accuracy per site: "
            + ", ".join(f"{n} {s['accuracy']:.3f}" for n, s in found.evaluation["sites"].items())
        )
    console.print(f"run directory: {directory}")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def site(context: typer.Context) -> None:
    """The site agent (`mlops federation site run --help`): Flower's SuperNode next to a site's data."""
    python = federation_python()
    os.execv(str(python), [str(python), "-m", "services.federation.site", *context.args])


def run_federation_python(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m services.federation ARGS`` in the federation environment."""
    return subprocess.run(
        [str(federation_python()), "-m", "services.federation", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
