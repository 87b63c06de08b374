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

import typer
from rich.console import Console
from rich.text import Text

from services.common.errors import Kind, PlatformError

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

_EXIT = {
    Kind.UNAVAILABLE: ExitCode.UNAVAILABLE,
    Kind.UNAUTHENTICATED: ExitCode.DENIED,
    Kind.PERMISSION: ExitCode.DENIED,
    Kind.NOT_FOUND: ExitCode.NOT_FOUND,
    Kind.INVALID: ExitCode.USAGE,
    Kind.FAILED_PRECONDITION: ExitCode.FAILED,
}


def exit_code_for(kind: Kind) -> ExitCode:
    """The CLI exit code for a platform error's kind."""
    return _EXIT.get(kind, ExitCode.FAILED)


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
def platform_errors(what: str) -> Iterator[None]:
    """Turn a refused or failed platform call into a one-line error naming ``what``, the
    status, the message and the field at fault, and the matching exit code."""
    try:
        yield
    except PlatformError as error:
        at = (
            f" (field {error.field})"
            if error.field and not error.message.startswith(f"{error.field}:")
            else ""
        )
        fail(f"{what}: {error.kind.grpc_code}: {error.message}{at}", exit_code_for(error.kind))


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
