"""Where a command finds the platform: explicit options and ``MLOPS_*`` variables first,
then the local stack ``mlops up`` is running, then the documented defaults.

So on a laptop ``mlops up`` in one terminal and ``mlops predict ...`` in another just
work, and against a remote platform ``MLOPS_TOKEN`` and the address variables decide.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.cli.output import ExitCode, fail
from services.cli.stack import StackPorts, StackState, running_stack

DEFAULT_STACK_DIR = Path(".mlops")
STACK_DIR_ENV = "MLOPS_STACK_DIR"


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
    """``--token``/``MLOPS_TOKEN``, else the running local stack's admin token."""
    if explicit:
        return explicit
    state = local_stack()
    if state is not None:
        return state.token
    fail(
        "no token: pass --token, set MLOPS_TOKEN (see `mlops token create`), or start a local stack "
        "with `mlops up`",
        ExitCode.DENIED,
    )


def resolve_auth_secret(explicit: str | None) -> str:
    """``MLOPS_AUTH_SECRET``, else the running local stack's secret."""
    if explicit:
        return explicit
    state = local_stack()
    if state is not None:
        return state.auth_secret
    fail("no signing secret: set MLOPS_AUTH_SECRET, or start a local stack with `mlops up`", ExitCode.USAGE)


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
