"""Flower's processes, started and stopped: the SuperLink, SuperNodes, runs.

The federation runs on Flower's deployment engine: a SuperLink (the server's side: the
Fleet API the sites connect to, the Control API runs are submitted to) that starts the
ServerApp of each run, and one SuperNode per site that starts the site's ClientApp for
every instruction. This module builds their command lines from the federation
environment's ``bin`` directory and manages them as child processes, each in a process
group of its own so that stopping one stops what it started. Only the standard library:
the platform's CLI and tests drive it too.

Flower's telemetry and update check are switched off in every process: a federation
tells nobody outside about itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FLOWER_CONNECTION = "federation"
"""The name of the SuperLink connection in the service's Flower configuration."""
SERVERAPP = "services.federation.server_app:app"
CLIENTAPP = "services.federation.site.client_app:app"
RUN_DIR_KEY = "run-dir"


class FlowerError(Exception):
    """A Flower process or command failed; the message carries its output."""


@dataclass(frozen=True)
class Certificates:
    """Flower's TLS: the server's certificate and key, and the CA the sites trust it by."""

    ca: Path
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Flower:
    """The federation environment's Flower commands."""

    bin_dir: Path

    def command(self, name: str) -> str:
        return str(self.bin_dir / name)

    def env(self, flwr_home: Path | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of every Flower process: this ``bin`` first on PATH (the SuperLink
        and SuperNodes start ``flwr-serverapp`` and ``flwr-clientapp`` by name), no telemetry."""
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
        if flwr_home is not None:
            env["FLWR_HOME"] = str(flwr_home)
        env.update(extra or {})
        return env

    def superlink(self, host: str, port: int, certificates: Certificates | None) -> list[str]:
        command = [self.command("flower-superlink"), "--host", host, "--port", str(port)]
        # Runs never install packages: the environment is pinned, and sites install nothing either.
        command.append("--disable-runtime-dependency-installation")
        if certificates is None:
            command.append("--insecure")
        else:
            command += [
                "--ssl-certfile",
                str(certificates.certificate),
                "--ssl-keyfile",
                str(certificates.key),
                "--ssl-ca-certfile",
                str(certificates.ca),
            ]
        return command

    def supernode(
        self,
        superlink: str,
        clientapp_port: int,
        node_config: Mapping[str, str | bool | int],
        root_certificates: Path | None,
    ) -> list[str]:
        command = [
            self.command("flower-supernode"),
            "--superlink",
            superlink,
            "--port",
            str(clientapp_port),
            "--node-config",
            node_config_text(node_config),
        ]
        if root_certificates is None:
            command.append("--insecure")
        else:
            command += ["--root-certificates", str(root_certificates)]
        return command


def node_config_text(values: Mapping[str, str | bool | int]) -> str:
    """``key="value" flag=true count=3``: the TOML-like form ``--node-config`` parses.

    >>> node_config_text({"site": 'a "b"', "role": "train", "allow-plain-updates": False})
    'site="a \\\\"b\\\\"" role="train" allow-plain-updates=false'
    """
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = json.dumps(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def write_app(directory: Path, serverapp: str = SERVERAPP, clientapp: str = CLIENTAPP) -> Path:
    """The Flower App manifest a run is submitted with. It carries no code: the SuperLink's
    ServerApp and every site's ClientApp are imported from their own installation."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(
        "\n".join(
            [
                "[build-system]",
                'requires = ["setuptools"]',
                'build-backend = "setuptools.build_meta"',
                "",
                "[project]",
                'name = "mlops-federation"',
                'version = "1.0.0"',
                'description = "The MLOps platform\'s federated training run"',
                'license = "Apache-2.0"',
                "dependencies = []",
                "",
                "[tool.flwr.app]",
                'publisher = "mlops"',
                "",
                "[tool.flwr.app.components]",
                f"serverapp = {json.dumps(serverapp)}",
                f"clientapp = {json.dumps(clientapp)}",
                "",
                "[tool.flwr.app.config]",
                f'{RUN_DIR_KEY} = ""',
                "",
            ]
        )
    )
    return directory


def write_connection(flwr_home: Path, address: str, ca: Path | None) -> None:
    """The Flower CLI's configuration: one SuperLink connection, the default."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{FLOWER_CONNECTION}"', "", f"[superlink.{FLOWER_CONNECTION}]"]
    lines.append(f"address = {json.dumps(address)}")
    lines.append(f"root-certificates = {json.dumps(str(ca))}" if ca else "insecure = true")
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


def submit(flower: Flower, flwr_home: Path, app: Path, run_dir: Path, timeout: float = 120) -> int:
    """Submit a run of ``app`` whose ServerApp works in ``run_dir``; its run id."""
    result = subprocess.run(
        [
            flower.command("flwr"),
            "run",
            str(app),
            FLOWER_CONNECTION,
            "--run-config",
            f"{RUN_DIR_KEY}={json.dumps(str(run_dir))}",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=flower.env(flwr_home),
        timeout=timeout,
        check=False,
    )
    payload = _json_tail(result.stdout)
    if result.returncode != 0 or not payload.get("success"):
        raise FlowerError(
            f"flwr run failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return int(payload["run-id"])


def run_state(flower: Flower, flwr_home: Path, run_id: int, timeout: float = 60) -> str:
    """Flower's status of a run: ``pending``, ``running``, ``finished:completed``, ``finished:failed`` ..."""
    result = subprocess.run(
        [flower.command("flwr"), "ls", FLOWER_CONNECTION, "--run-id", str(run_id), "--format", "json"],
        capture_output=True,
        text=True,
        env=flower.env(flwr_home),
        timeout=timeout,
        check=False,
    )
    runs = _json_tail(result.stdout).get("runs") or []
    if result.returncode != 0 or not runs:
        raise FlowerError(
            f"flwr ls failed ({result.returncode}): {result.stdout[-1000:]}{result.stderr[-1000:]}"
        )
    return str(runs[0]["status"])


def _json_tail(text: str) -> dict[str, Any]:
    """The JSON object the Flower CLI prints last (it may print notes before it)."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        value = json.loads(text[start:])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Child:
    """A child process in a process group of its own, its output in a log file."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str], log: Path):
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._output: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group at once: a site vanishing mid-round."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._output.close()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL what is left after ``grace`` seconds."""
        stop_all([self], grace)

    def _terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def _finish(self, deadline: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._output.close()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_all(children: Sequence[Child], grace: float = 10.0) -> None:
    """Stop ``children`` together: SIGTERM every group first, then wait for them all within
    one ``grace`` period, then SIGKILL what is left (one slow process does not hold up the rest)."""
    for child in children:
        child._terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child._finish(deadline)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, child: Child | None = None) -> None:
    """Until something accepts connections on ``host:port`` (or ``child`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise FlowerError(f"{child.name} exited with {child.process.returncode}: {child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise FlowerError(f"nothing listens on {host}:{port} after {timeout:g}s")
