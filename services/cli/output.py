"""What every ``mlops`` command shares: one console, ``--json`` output, and exit codes that
mean the same thing in every command, so scripts can branch on them.

Exit codes
----------
0 ``OK``           the command did what it was asked
1 ``FAILED``       it ran and the answer is no (unhealthy component, rejected request)
2 ``USAGE``        bad arguments or bad input (the message names which)
3 ``UNAVAILABLE``  the platform could not be reached (nothing listening, no running stack)
4 ``DENIED``       the token is missing, invalid, or lacks the scope
5 ``NOT_FOUND``    the model, version, dataset or topic does not exist
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import grpc
import typer
from rich.console import Console
from rich.text import Text

console = Console()
"""Human output (tables, progress) goes to stdout."""
err_console = Console(stderr=True)
"""Errors and warnings go to stderr, so ``--json`` output on stdout stays parseable."""


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNAVAILABLE = 3
    DENIED = 4
    NOT_FOUND = 5


EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed, 2 bad arguments or input, 3 platform unreachable, "
    "4 token missing or lacking the scope, 5 not found."
)

_GRPC_EXIT = {
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.DENIED,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.USAGE,
    grpc.StatusCode.OUT_OF_RANGE: ExitCode.USAGE,
    grpc.StatusCode.FAILED_PRECONDITION: ExitCode.FAILED,
}


def exit_code_for(code: grpc.StatusCode) -> ExitCode:
    """The CLI exit code for a gRPC status."""
    return _GRPC_EXIT.get(code, ExitCode.FAILED)


def print_json(payload: Any) -> None:
    """One JSON document on stdout (no colour, no wrapping), for scripts."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: ExitCode = ExitCode.FAILED) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    # Messages quote user input: never let it be read as console markup.
    err_console.print(Text.assemble(("error: ", "bold red"), message), highlight=False)
    raise typer.Exit(int(code))


@contextmanager
def grpc_errors(what: str) -> Iterator[None]:
    """Turn a failed gRPC call into a one-line error and the matching exit code."""
    try:
        yield
    except grpc.RpcError as exc:
        # grpc.RpcError itself has no code(); the errors calls raise are also grpc.Call.
        code: grpc.StatusCode = (
            exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
        )
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        fail(f"{what}: {code.name}: {details}", exit_code_for(code))


JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")
]
"""The ``--json`` flag every command that reports something takes."""


def parse_time(option: str, value: str | None) -> datetime | None:
    """An ISO-8601 time with a UTC offset given to ``option``; a usage error otherwise."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: not an ISO-8601 time: {value!r}", ExitCode.USAGE)
    if moment.tzinfo is None:
        fail(f"{option}: needs a UTC offset (for example 2026-11-26T10:00:00Z)", ExitCode.USAGE)
    return moment
