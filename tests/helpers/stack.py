"""A real ``mlops up`` for tests: the local stack as a user runs it, in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from services.cli.stack_state import StackState


def start_up(
    workdir: Path,
    services: tuple[str, ...] | None = None,
    *,
    tls: bool = False,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[str], StackState]:
    """``mlops up`` on free ports with its state in ``workdir`` (every service unless
    ``services`` says which; with ``--tls`` when ``tls``; with ``env`` added to their
    environment); returns once it says it is ready. Its own log goes to ``workdir/up.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = ["--services", ",".join(services)] if services is not None else []
    chosen += ["--tls"] if tls else []
    log = workdir / "up.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--free-ports", "--json", "--workdir", str(workdir)]
            + chosen,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline() or "{}")  # blocks until ready or exit
    if ready.get("event") != "ready":
        process.kill()
        process.wait()
        raise AssertionError(f"mlops up did not become ready: {log.read_text()[-3000:]}")
    return process, StackState.load(workdir / "stack.json")
