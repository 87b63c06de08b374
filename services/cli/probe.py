"""``mlops probe``: one health check, for container health checks and scripts.

Images have no grpc_health_probe, and the platform already ships the standard gRPC
health client, so the images' HEALTHCHECK lines run ``python -m services.cli.probe``:
run as a module it imports only the check it makes, not the whole CLI, because a
health check runs every few seconds next to the service it checks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from services.cli.health import check_grpc_health, check_http_health

if TYPE_CHECKING:
    from services.common.tls import ClientTls

TlsOption = Annotated[
    bool,
    typer.Option("--tls", envvar="MLOPS_TLS", help="Connect with TLS (on where the service serves TLS)."),
]
CaOption = Annotated[
    Path | None,
    typer.Option("--ca", envvar="MLOPS_TLS_CA_FILE", help="CA to verify the server with (implies --tls)."),
]

app = typer.Typer(
    help="One health check; exit 0 when healthy, 1 when not.", no_args_is_help=True, add_completion=False
)


@app.command()
def grpc(
    address: Annotated[str, typer.Argument(help="host:port of a gRPC server.")],
    service: Annotated[str, typer.Option(help="Service name to check; empty: the whole server.")] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 2.0,
    tls: TlsOption = False,
    ca: CaOption = None,
) -> None:
    """The standard gRPC health protocol (grpc.health.v1.Health/Check): SERVING or not."""
    _report(*check_grpc_health(address, timeout, service, tls=_client_tls(tls or ca is not None, ca)))


@app.command()
def http(
    url: Annotated[str, typer.Argument(help="A health route, e.g. http://127.0.0.1:8082/health/ready.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 2.0,
    ca: CaOption = None,
) -> None:
    """An HTTP health route: 200 or not (an https URL verified with --ca)."""
    _report(*check_http_health(url, timeout, tls=_client_tls(ca is not None, ca)))


def _client_tls(enabled: bool, ca: Path | None) -> ClientTls | None:
    if not enabled:
        return None
    from services.common.tls import ClientTls  # here: a plaintext check needs none of it

    return ClientTls(ca_file=ca)


def _report(healthy: bool, detail: str) -> None:
    if healthy:
        print(detail)
        return
    print(f"unhealthy: {detail}", file=sys.stderr)
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
