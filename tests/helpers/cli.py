"""Running ``mlops`` commands in tests against services that run in the test's own process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from services.cli.__main__ import app as mlops


def json_document(out: str) -> Any:
    """The command's one JSON document in its captured stdout. Services under test share the
    process, so their log lines land in the same stdout; the document is the line that is one."""
    documents = [line for line in out.splitlines() if line.startswith(("{", "["))]
    assert len(documents) == 1, out
    return json.loads(documents[0])


class Cli:
    """Runs ``mlops models ...`` (or ``group``'s commands) in a worker thread with its own
    event loop, as the console script does, while the services keep serving on the test's
    loop. (A process per call would cost over a second of start-up each.) ``env`` is the
    commands' environment: the registry's address, the token, and a stack directory with
    no stack in it; add to it what other commands need (the broker, the topic prefix)."""

    def __init__(self, address: str, token: str, stack_dir: Path, *, group: str = "models"):
        self.group = group
        self.env = {
            "MLOPS_REGISTRY_ADDRESS": address,
            "MLOPS_TOKEN": token,
            "MLOPS_STACK_DIR": str(stack_dir),
        }
        self.runner = CliRunner()

    async def __call__(self, *args: str, token: str | None = None) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of ``mlops <group> *args`` (``mlops models`` by default)."""
        return await self.run(self.group, *args, token=token)

    async def run(self, *argv: str, token: str | None = None) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of ``mlops *argv`` (any command group)."""
        env = dict(self.env, MLOPS_TOKEN=token) if token else self.env
        result = await asyncio.to_thread(self.runner.invoke, mlops, list(argv), env=env, terminal_width=200)
        return result.exit_code, result.stdout, result.stderr

    async def json(self, *args: str) -> Any:
        """The JSON document of a command that must succeed."""
        code, out, err = await self(*args, "--json")
        assert code == 0, err
        return json_document(out)
