"""The local stack for real: the embedded broker and database plus whichever services are
installed, started as processes, checked over their health protocols, and stopped with
nothing left behind, both through :class:`LocalStack` and through a real ``mlops up``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.cli.output import ExitCode
from services.cli.stack import (
    INFRA,
    LocalStack,
    StackError,
    StackPorts,
    StackState,
    available_services,
    check_component,
    pid_alive,
)
from services.common.events import Topics
from services.common.localstack import port_open

INSTALLED = available_services()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc, whatever their process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return {p for p in found if pid_alive(p)}


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mlops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def start_up(workdir: Path, services: tuple[str, ...]) -> tuple[subprocess.Popen[str], StackState]:
    """A real ``mlops up`` on free ports; returns once its state file says it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--free-ports", "--json", "--workdir", str(workdir)]
        + ["--services", ",".join(services)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline() or "{}")  # blocks until ready or exit
    if ready.get("event") != "ready":
        process.kill()
        raise AssertionError(f"mlops up did not become ready: {process.communicate()[1]}")
    return process, StackState.load(workdir / "stack.json")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("stack"), StackPorts.free(), services=INSTALLED)
    local.start(timeout=120)
    try:
        yield local
    finally:
        local.stop()


def test_every_component_is_healthy_and_the_topics_exist(stack: LocalStack) -> None:
    assert set(stack.processes) == {*INFRA, *INSTALLED}
    unhealthy = [h for h in stack.health() if not h.healthy]
    assert not unhealthy
    assert all(stack.log_path(name).exists() for name in stack.processes)

    async def topic_names() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    assert set(Topics("mlops").all()) <= asyncio.run(topic_names())


@pytest.mark.skipif(not INSTALLED, reason="no service package installed yet to kill and restart")
def test_a_killed_service_is_reported_and_comes_back_on_restart(stack: LocalStack) -> None:
    service = INSTALLED[0]
    old_pid = stack.processes[service].pid
    stack.kill(service)
    assert not check_component(service, stack.ports).healthy
    stack.restart(service)
    assert stack.processes[service].pid != old_pid
    assert check_component(service, stack.ports).healthy


def test_kafka_restart_recreates_the_topics(stack: LocalStack) -> None:
    stack.restart("kafka")
    health = check_component("kafka", stack.ports)
    assert health.healthy
    assert health.detail == f"{len(Topics('mlops').all())} topics"


@pytest.mark.skipif(not INSTALLED, reason="no service package installed yet to misconfigure")
def test_a_service_that_cannot_start_fails_the_start_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    service = INSTALLED[0]
    # A too-short signing secret: settings validation must stop the service at start-up.
    local = LocalStack(tmp_path, StackPorts.free(), services=[service], env={"MLOPS_AUTH_SECRET": "short"})
    with pytest.raises(StackError, match=service) as failure:
        local.start(timeout=60)
    assert "auth_secret" in str(failure.value).lower() or "AUTH_SECRET" in str(failure.value)
    assert local.processes == {}
    assert not port_open(local.ports.kafka) and not port_open(local.ports.mongodb)


def test_up_status_down_leave_no_process_behind(tmp_path: Path) -> None:
    process, state = start_up(tmp_path, INSTALLED)
    try:
        children = descendants(process.pid)
        assert set(state.pids.values()) <= children
        assert state.services == list(INSTALLED)

        status = mlops("status", "--workdir", str(tmp_path), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["healthy"] is True
        assert [c["name"] for c in report["components"]] == [*INFRA, *INSTALLED]

        down = mlops("down", "--workdir", str(tmp_path), "--json")
        assert down.returncode == 0, down.stdout + down.stderr
        assert json.loads(down.stdout) == {"stopped": True, "pid": process.pid, "left_running": []}
        assert process.wait(timeout=30) == 0
        assert [p for p in children if pid_alive(p)] == []
        assert not (tmp_path / "stack.json").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_ctrl_c_on_up_stops_everything(tmp_path: Path) -> None:
    process, state = start_up(tmp_path, ())
    children = descendants(process.pid)
    assert {state.pids["kafka"], state.pids["mongodb"]} <= children
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert [p for p in children if pid_alive(p)] == []
    assert not (tmp_path / "stack.json").exists()


def test_status_of_nothing_running_is_unhealthy_and_says_why(tmp_path: Path) -> None:
    ports = StackPorts.free()
    args = [f"--port={name}={port}" for name, port in ports.as_dict().items()]
    status = mlops("status", "--workdir", str(tmp_path), "--json", *args)
    assert status.returncode == ExitCode.FAILED
    report = json.loads(status.stdout)
    assert report["healthy"] is False
    assert {c["detail"] for c in report["components"]} == {"connection refused"}
