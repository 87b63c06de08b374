"""Where a command finds the platform: explicit options and ``MLOPS_*`` variables first,
then the local stack ``mlops up`` is running, then the documented defaults.

So on a laptop ``mlops up`` in one terminal and ``mlops predict ...`` in another just
work, and against a remote platform ``MLOPS_TOKEN`` and the address variables decide.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from services.cli.output import ExitCode, fail, platform_errors
from services.cli.stack_security import platform_tls
from services.cli.stack_state import StackPorts, StackState, running_stack
from services.common.clients.base import GrpcClient
from services.common.kafka_security import KafkaSecurity
from services.common.settings import PlatformSettings
from services.common.tls import ClientTls

DEFAULT_STACK_DIR = Path(".mlops")
STACK_DIR_ENV = "MLOPS_STACK_DIR"

T = TypeVar("T")
C = TypeVar("C", bound=GrpcClient)

TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MLOPS_TOKEN",
        show_envvar=True,
        help="Bearer token with the scope the command needs (default: the local stack's).",
    ),
]
"""The ``--token`` every command calling a platform API takes."""
RegistryAddressOption = Annotated[
    str | None,
    typer.Option(
        "--address", envvar="MLOPS_REGISTRY_ADDRESS", show_envvar=True, help="The registry's gRPC host:port."
    ),
]
DatasetsAddressOption = Annotated[
    str | None,
    typer.Option(
        "--address", envvar="MLOPS_DATASETS_ADDRESS", show_envvar=True, help="Ingest's gRPC host:port."
    ),
]


def stack_dir() -> Path:
    """The local stack's working directory (``MLOPS_STACK_DIR``, default ``.mlops``)."""
    return Path(os.environ.get(STACK_DIR_ENV) or DEFAULT_STACK_DIR)


def local_stack() -> StackState | None:
    """The stack ``mlops up`` runs from :func:`stack_dir`, if any."""
    return running_stack(stack_dir())


def stack_ports() -> StackPorts:
    """The running local stack's ports, or the defaults."""
    state = local_stack()
    return state.ports if state is not None else StackPorts.defaults()


def resolve_token(explicit: str | None) -> str:
    """``--token``/``MLOPS_TOKEN``, else an admin token of the running local stack (minted
    again from the stack's key when the saved one is about to expire)."""
    if explicit:
        return explicit
    state = local_stack()
    if state is not None:
        return state.admin_token()
    fail(
        "no token: pass --token, set MLOPS_TOKEN (see `mlops token create`), or start a local stack "
        "with `mlops up`",
        ExitCode.DENIED,
    )


def resolve_public_keys(explicit: str | None) -> str:
    """``MLOPS_AUTH_PUBLIC_KEYS``, else the running local stack's."""
    if explicit:
        return explicit
    state = local_stack()
    if state is not None:
        return state.public_keys
    fail(
        "no public keys: set MLOPS_AUTH_PUBLIC_KEYS (the registry serves them at /.well-known/jwks.json), "
        "or start a local stack with `mlops up`",
        ExitCode.USAGE,
    )


def resolve_address(explicit: str | None, port_name: str) -> str:
    """``explicit`` (an option or its variable), else the local stack's or the default port."""
    if explicit:
        return explicit
    return f"127.0.0.1:{getattr(stack_ports(), port_name)}"


def resolve_kafka(explicit: str | None) -> tuple[str, str]:
    """Bootstrap servers and topic prefix: ``MLOPS_KAFKA_BOOTSTRAP_SERVERS`` and
    ``MLOPS_TOPIC_PREFIX``, else the local stack's, else the defaults."""
    state = local_stack()
    prefix = os.environ.get("MLOPS_TOPIC_PREFIX") or (state.topic_prefix if state else "mlops")
    if explicit:
        return explicit, prefix
    ports = state.ports if state is not None else StackPorts.defaults()
    return f"127.0.0.1:{ports.kafka}", prefix


def resolve_tls() -> ClientTls | None:
    """TLS for the platform's endpoints: the ``MLOPS_TLS*`` variables when ``MLOPS_TLS`` is
    set, else the running local stack's CA when it runs with TLS, else none (plaintext)."""
    state = local_stack()
    return platform_tls(state.ca if state is not None else "")


def kafka_security() -> KafkaSecurity:
    """How the CLI's Kafka clients connect: the ``MLOPS_KAFKA_SECURITY_PROTOCOL`` group of
    variables, as every service reads them (PLAINTEXT when unset, as the local stack's broker)."""
    return KafkaSecurity.from_settings(PlatformSettings())


def call_service(
    client_type: Callable[..., C],
    port_name: str,
    address: str | None,
    token: str | None,
    what: str,
    call: Callable[[C], Awaitable[T]],
) -> T:
    """Run ``call`` with a client of ``client_type`` opened on the resolved address and token.

    A failed call ends the command with a one-line error naming ``what`` and the exit code
    of its kind (:func:`~services.cli.output.platform_errors`).
    """
    target = resolve_address(address, port_name)
    bearer = resolve_token(token)

    async def run() -> T:
        async with client_type(target, lambda: bearer, tls=resolve_tls()) as client:
            return await call(client)

    with platform_errors(what):
        return asyncio.run(run())
