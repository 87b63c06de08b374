"""The platform's promise, end to end, as a user meets it: ``mlops up`` runs every service as
its own process on a real broker and database; ``mlops demo`` sends events, has a model
trained, promoted and served, makes the concept drift, and the platform detects it online,
retrains exactly once and swaps the new version in while traffic runs, without a failed
request. Then ``mlops demo`` again on the same stack: it closes the loop again (each run has
a model of its own, so the first run's retrain cooldown does not hold the second back)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.cli.demo.scenario import DemoConfig
from services.cli.stack import ALL_SERVICES
from services.cli.stack_state import StackState
from services.common.clients.registry import RegistryClient
from services.common.proto.mlops.v1 import registry_pb2
from tests.helpers.stack import start_up

pytestmark = pytest.mark.e2e


def run_demo(workdir: Path, report: Path) -> dict[str, Any]:
    """``mlops demo`` on the stack ``mlops up`` runs from ``workdir``; its report."""
    finished = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--workdir", str(workdir), "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert finished.returncode == 0, finished.stderr[-6000:]
    return dict(json.loads(report.read_text()))


def mlops(workdir: Path, *args: str) -> str:
    """``mlops ARGS`` against the stack ``mlops up`` runs from ``workdir``; its stdout."""
    finished = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLOPS_STACK_DIR": str(workdir), "COLUMNS": "200"},
    )
    assert finished.returncode == 0, finished.stderr[-6000:]
    return finished.stdout


async def versions_of(state: StackState, model: str) -> list[registry_pb2.ModelVersion]:
    async with RegistryClient(f"127.0.0.1:{state.ports.registry_grpc}", state.admin_token) as registry:
        return await registry.list_versions(model)


# Two demos, each one to two minutes on this machine, and a stack to start.
@pytest.mark.timeout(1500)
def test_the_loop_closes_by_itself_run_after_run_on_one_running_stack(tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    process, state = start_up(workdir)
    try:
        assert sorted(state.pids) == sorted(["kafka", "mongodb", *ALL_SERVICES])
        assert len(set(state.pids.values())) == len(state.pids)
        reports = [run_demo(workdir, tmp_path / f"demo-{run}.json") for run in (1, 2)]
        registered = {r["model_name"]: asyncio.run(versions_of(state, r["model_name"])) for r in reports}
        # The demo dataset scored as a batch job by the first run's production version.
        scored = json.loads(
            mlops(workdir, "batch", "score", reports[0]["model_name"], "--dataset", "demo", "--json")
        )
        some_scores = [
            json.loads(line)
            for line in mlops(
                workdir,
                "topics",
                "tail",
                "batch.scores",
                "--from-beginning",
                "--max",
                "3",
                "--idle-timeout",
                "20",
                "--json",
            ).splitlines()
        ]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)

    config = DemoConfig()
    first, second = reports
    assert first["model_name"] != second["model_name"]
    for report in reports:
        assert report["loop_closed"], report["verdict"]
        assert report["retrain_requests"] == 1
        assert report["failed_requests"] == 0
        assert report["new_version"] == report["first_version"] + 1
        assert report["new_version_gates"] and all(report["new_version_gates"].values())
        # The registry holds the first version and exactly one retrained one, whose lineage
        # names the drift event and the retrain request that caused it.
        versions = {v.version: v for v in registered[report["model_name"]]}
        assert sorted(versions) == [report["first_version"], report["new_version"]]
        lineage = versions[report["new_version"]].lineage
        assert lineage.trigger == "drift"
        assert lineage.parent_version == report["first_version"]
        assert lineage.train_request_id == report["retrain_request_id"]
        assert lineage.drift_event_id == report["drift_event_id"] != ""
        assert versions[report["first_version"]].lineage.trigger == "initial"

    # Batch scoring: every stored row of the window scored by the version production names,
    # with the window's content hash as lineage, the scores readable on their topic.
    assert scored["state"] == "STATE_SUCCEEDED", scored
    assert scored["version"] == first["new_version"]
    assert scored["rows_scored"] == scored["window"]["row_count"] > 0
    assert len(scored["window"]["content_sha256"]) == 64
    assert len(some_scores) == 3
    assert all(s["message"]["job_id"] == scored["job_id"] and s["message"]["label"] for s in some_scores)

    # The figures of a run, as the demo measured them.
    assert first["accuracy_before_drift"] > 0.85
    # The new concept is orthogonal to the old one: the old model falls to chance.
    assert first["accuracy_after_drift_old_model"] < 0.65
    assert first["accuracy_after_swap"] > first["accuracy_after_drift_old_model"] + config.min_accuracy_gain
    # The monitor needed few post-change samples, and placed the change where it happened,
    # so the retrain learned the new concept only.
    assert 0 < first["detection_delay_samples"] <= 500
    assert abs(first["onset_error_samples"]) <= 250
