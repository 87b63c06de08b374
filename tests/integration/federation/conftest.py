"""Federations on loopback for tests: Flower's real SuperLink and SuperNodes, started from
``.venv-federation`` (``make federation-venv``; ``make test`` builds it), as the site agent
and the federation service start them. Nothing of Flower is imported here."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.cli.federated import site_rows, write_csv
from services.federation import runtime
from services.federation.spec import FederationSpec
from services.federation.status import RunInputs, RunStatus, read_status
from tests.helpers.environments import FEDERATION_PYTHON, require

ROOT = Path(__file__).resolve().parents[3]
FEDERATION_BIN = FEDERATION_PYTHON.parent
MALICIOUS_CLIENTAPP = "tests.integration.federation.malicious:app"
FEATURES = [f"x{i}" for i in range(6)]


@pytest.fixture(autouse=True)
def federation_environment() -> None:
    """Flower's environment, or a skip (a failure in CI)."""
    require(FEDERATION_PYTHON, "federation-venv")


def spec(**parts: Any) -> dict[str, Any]:
    """A small federation over the demo's six features: few rounds, short timeouts."""
    values: dict[str, Any] = {
        "model_name": "fed-" + str(time.time_ns())[-8:],
        "features": FEATURES,
        "target": "label",
        "classes": ["0", "1"],
        "model": {"learning_rate": 0.1, "local_epochs": 1},
        "strategy": {"rounds": 1, "min_sites": 2, "round_timeout_seconds": 90, "connect_timeout_seconds": 90},
    }
    for key, value in parts.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return values


class LoopbackFederation:
    """A SuperLink and site agents in ``workdir``; runs submitted as the service submits them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.flower = runtime.Flower(FEDERATION_BIN)
        certificates = workdir / "certs"
        subprocess.run(
            [
                str(FEDERATION_BIN / "python"),
                "-m",
                "services.federation",
                "certificates",
                "--dir",
                str(certificates),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.certificates = runtime.Certificates(
            certificates / "ca.pem", certificates / "superlink.pem", certificates / "superlink.key"
        )
        self.port = runtime.free_port()
        self.home = workdir / "flower"
        runtime.write_connection(self.home, f"127.0.0.1:{self.port}", self.certificates.ca)
        self.superlink = runtime.Child(
            "superlink",
            self.flower.superlink("127.0.0.1", self.port, self.certificates),
            self.flower.env(self.home),
            workdir / "superlink.log",
        )
        self.sites: dict[str, runtime.Child] = {}
        runtime.wait_for_port("127.0.0.1", self.port, 60, self.superlink)

    def data(self, name: str, skew: int, rows: int = 300) -> Path:
        path = self.workdir / f"{name}.csv"
        write_csv(path, *site_rows(skew, rows, np.random.default_rng(skew + 100 * len(self.sites))))
        return path

    def agent(self, name: str, skew: int, *, plain: bool = False) -> runtime.Child:
        """An honest site, started the way a site starts its agent."""
        command = [str(FEDERATION_BIN / "python"), "-m", "services.federation.site", "run", "--name", name]
        command += ["--server", f"127.0.0.1:{self.port}", "--data", str(self.data(name, skew))]
        command += ["--root-certificates", str(self.certificates.ca), "--workdir", str(self.workdir / name)]
        command += ["--clientapp-port", str(runtime.free_port())]
        command += ["--allow-plain-updates"] if plain else []
        return self._start(name, command)

    def attacker(self, name: str, skew: int, attack: str) -> runtime.Child:
        """A site whose ClientApp (the test one) sends ``attack`` instead of an honest update."""
        config: dict[str, str | bool] = {
            "site": name,
            "data-path": str(self.data(name, skew)),
            "attack": attack,
        }
        config["allow-plain-updates"] = True
        command = self.flower.supernode(
            f"127.0.0.1:{self.port}", runtime.free_port(), config, self.certificates.ca
        )
        return self._start(name, command)

    def _start(self, name: str, command: list[str]) -> runtime.Child:
        child = runtime.Child(
            name, command, self.flower.env(self.workdir / name), self.workdir / f"{name}.log"
        )
        self.sites[name] = child
        return child

    def submit(self, spec_values: dict[str, Any], clientapp: str = runtime.CLIENTAPP) -> Path:
        run_dir = self.workdir / "runs" / str(time.time_ns())
        RunInputs(FederationSpec.parse(spec_values).to_json()).write(run_dir)
        app = runtime.write_app(self.workdir / f"app-{run_dir.name}", clientapp=clientapp)
        runtime.submit(self.flower, self.home, app, run_dir)
        return run_dir

    def wait(self, run_dir: Path, until: Callable[[RunStatus], bool], within: float) -> RunStatus:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            status = read_status(run_dir)
            if status is not None and until(status):
                return status
            time.sleep(0.1)
        logs = {name: child.tail(1500) for name, child in self.sites.items()}
        raise AssertionError(
            f"the run did not get there in {within:g}s: {read_status(run_dir)}\n{logs}\n{self.superlink.tail()}"
        )

    def finished(self, run_dir: Path, within: float) -> RunStatus:
        return self.wait(run_dir, lambda s: s.state in ("finished", "failed"), within)

    def close(self) -> None:
        runtime.stop_all([*self.sites.values(), self.superlink])


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[LoopbackFederation]:
    running = LoopbackFederation(tmp_path)
    try:
        yield running
    finally:
        running.close()
