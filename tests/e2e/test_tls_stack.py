"""``mlops up --tls`` as a user meets it: every gRPC and HTTP endpoint of every service,
and the database, refuse plaintext and accept the stack's CA (the platform's clients, curl --cacert, and
NVIDIA's tritonclient with ``ssl=True``), artifacts are stored encrypted, and ``mlops
demo`` closes the loop on it, finding the CA by itself through stack.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from services.cli.health import check_grpc_health, check_http_health
from services.cli.stack import ALL_SERVICES, SERVICES
from services.cli.stack_state import StackState
from services.common.auth import Scope
from services.common.tls import ClientTls
from tests.e2e.test_closed_loop import run_demo
from tests.helpers.environments import CLIENT_PYTHON, ROOT, require
from tests.helpers.stack import start_up

pytestmark = pytest.mark.e2e

TRITON_TLS = ROOT / "tests" / "clients" / "triton_tls.py"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackState, Path]]:
    workdir = tmp_path_factory.mktemp("tls-stack")
    process, state = start_up(workdir, tls=True)
    try:
        yield state, workdir
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def endpoints(state: StackState) -> Iterator[tuple[str, str, int]]:
    for name in ALL_SERVICES:
        spec = SERVICES[name]
        if spec.grpc_port is not None:
            yield name, "grpc", getattr(state.ports, spec.grpc_port)
        yield name, "http", getattr(state.ports, spec.http_port)


def test_every_endpoint_refuses_plaintext_and_accepts_the_ca(stack: tuple[StackState, Path]) -> None:
    state, workdir = stack
    assert state.ca == str((workdir / "tls" / "ca.pem").resolve())
    tls = ClientTls(ca_file=Path(state.ca))
    checked = []
    for name, kind, port in endpoints(state):
        if kind == "grpc":
            address = f"127.0.0.1:{port}"
            assert check_grpc_health(address, 5, tls=tls) == (True, "SERVING"), name
            healthy, detail = check_grpc_health(address, 5)
            assert not healthy and detail.startswith("UNAVAILABLE"), (name, detail)
        else:
            assert check_http_health(f"https://127.0.0.1:{port}/health/live", 5, tls=tls) == (
                True,
                "HTTP 200",
            )
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=5)
            with pytest.raises(httpx.HTTPError):  # the system's roots do not know the stack's CA
                httpx.get(f"https://127.0.0.1:{port}/health/live", timeout=5)
        checked.append((name, kind))
    assert len(checked) == 9


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this machine")
def test_curl_with_the_stack_ca(stack: tuple[StackState, Path]) -> None:
    state, _ = stack
    url = f"https://127.0.0.1:{state.ports.serving_http}/v2/health/ready"
    answer = subprocess.run(
        ["curl", "-sS", "--cacert", state.ca, url], capture_output=True, text=True, timeout=30
    )
    assert answer.returncode == 0 and json.loads(answer.stdout) == {"ready": True}, answer.stderr
    without = subprocess.run(["curl", "-sS", url], capture_output=True, text=True, timeout=30)
    assert without.returncode == 60, without  # curl: the peer's certificate cannot be verified


def test_tritonclient_with_ssl(stack: tuple[StackState, Path]) -> None:
    require(CLIENT_PYTHON, "client-venv")
    state, _ = stack
    token = state.mint("triton", [Scope.PREDICT])
    finished = subprocess.run(
        [
            str(CLIENT_PYTHON),
            str(TRITON_TLS),
            "--url",
            f"127.0.0.1:{state.ports.serving_grpc}",
            "--token",
            token,
            "--ca",
            state.ca,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    assert [r for r in results if not r["ok"]] == [] and len(results) == 4, finished.stdout + finished.stderr
    assert finished.returncode == 0


@pytest.mark.timeout(900)
def test_the_demo_closes_the_loop_over_tls_with_artifacts_encrypted(
    stack: tuple[StackState, Path], tmp_path: Path
) -> None:
    state, workdir = stack
    report = run_demo(workdir, tmp_path / "demo.json")
    assert report["loop_closed"], report["verdict"]
    assert report["failed_requests"] == 0
    client: MongoClient[dict[str, Any]]
    uri = f"mongodb://127.0.0.1:{state.ports.mongodb}/?tls=true&tlsCAFile={state.ca}"
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        entries: list[dict[str, Any]] = list(client["mlops"]["artifacts"].find({}, {"encryption.key_id": 1}))
    assert len(entries) >= 2  # the first model and its retrained successor
    assert all(entry["encryption"]["key_id"] == "local" for entry in entries)


def test_the_database_refuses_plaintext(stack: tuple[StackState, Path]) -> None:
    state, _ = stack
    client: MongoClient[dict[str, Any]]
    with MongoClient(f"mongodb://127.0.0.1:{state.ports.mongodb}", serverSelectionTimeoutMS=2000) as client:
        with pytest.raises(PyMongoError):
            client.admin.command("ping")


def test_the_cli_finds_the_ca_by_itself(stack: tuple[StackState, Path]) -> None:
    _, workdir = stack
    listed = subprocess.run(
        [sys.executable, "-m", "services.cli", "models", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MLOPS_STACK_DIR": str(workdir)},
    )
    assert listed.returncode == 0, listed.stderr
